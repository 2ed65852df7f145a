from __future__ import annotations

import numpy as np
import pytest

from ufme_ray.gallery.events import (
    CorruptSegmentError,
    DeleteEvent,
    EnrolEvent,
    EraseGalleryEvent,
    GalleryEvent,
    decode_segment,
    encode_segment,
)


def _events() -> list:
    return [
        EnrolEvent(template_id=7, subject_id="alice", vector=np.arange(4, dtype=np.float32), quality=0.9, timestamp=1),
        DeleteEvent(subject_id="bob", timestamp=2.0),
        EnrolEvent(template_id=2**62, subject_id="zoë", vector=np.ones(4, np.float32), quality=0.1, timestamp=3.0),
        GalleryEvent("staff", "create", 4.0, {"description": "front désk", "policy": {"gates": {"identify": []}}}),
        EraseGalleryEvent("staff", 2**40, 5.0),
        GalleryEvent("staff", "purge", 6.0),
    ]


def test_segment_round_trip() -> None:
    data = encode_segment(shard=3, writer_epoch=5, first_seq=10, events=_events())
    header, decoded = decode_segment(data, "seg")
    assert (header.shard, header.writer_epoch, header.first_seq, header.last_seq) == (3, 5, 10, 15)
    assert decoded == list(zip(range(10, 16), _events()))
    assert not decoded[0][1].vector.flags.writeable


def test_flipped_byte_is_reported_with_segment_and_record() -> None:
    data = bytearray(encode_segment(0, 1, 1, _events()))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptSegmentError) as info:
        decode_segment(bytes(data), "events/shard-0/x.seg")
    assert info.value.segment == "events/shard-0/x.seg"
    assert "record" in info.value.reason or "footer" in info.value.reason


@pytest.mark.parametrize("keep", [0, 10, 40, 70, -24, -1])
def test_torn_segment_is_detected(keep: int) -> None:
    data = encode_segment(0, 1, 1, _events())
    with pytest.raises(CorruptSegmentError, match="torn|footer"):
        decode_segment(data[:keep], "seg")


def test_cut_exactly_at_a_record_boundary_is_torn() -> None:
    whole = encode_segment(0, 1, 1, _events())
    two = encode_segment(0, 1, 1, _events()[:2])
    footer_size = 8 + 4 + 8 + 4
    with pytest.raises(CorruptSegmentError, match="torn"):
        decode_segment(whole[: len(two) - footer_size], "seg")


def test_trailing_garbage_is_refused() -> None:
    with pytest.raises(CorruptSegmentError, match="after the footer"):
        decode_segment(encode_segment(0, 1, 1, _events()) + b"x", "seg")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject_id": ""},
        {"subject_id": "x" * 2000},
        {"vector": np.zeros((2, 2), np.float32)},
        {"vector": np.array([1.0, np.nan], np.float32)},
        {"vector": np.ones(3, np.float64)},
        {"quality": float("inf")},
        {"timestamp": float("nan")},
        {"template_id": 2**63},
    ],
)
def test_invalid_enrol_events_are_refused(kwargs: dict) -> None:
    fields = {"template_id": 1, "subject_id": "s", "vector": np.ones(3, np.float32), "quality": 1.0, "timestamp": 0.0}
    with pytest.raises(ValueError):
        EnrolEvent(**{**fields, **kwargs})


def test_event_vector_is_copied_and_frozen() -> None:
    vector = np.ones(3, np.float32)
    event = EnrolEvent(template_id=1, subject_id="s", vector=vector, quality=1.0, timestamp=0.0)
    vector[0] = 5.0
    assert event.vector[0] == 1.0
    with pytest.raises(ValueError):
        event.vector[0] = 2.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: GalleryEvent("staff", "rename", 1.0),
        lambda: GalleryEvent("staff", "create", 1.0, {"policy": {1, 2}}),
        lambda: EraseGalleryEvent("staff", -1, 1.0),
        lambda: GalleryEvent("", "create", 1.0),
    ],
    ids=["unknown action", "details not JSON", "negative generation", "empty id"],
)
def test_invalid_gallery_events_are_refused(make) -> None:
    with pytest.raises((ValueError, TypeError)):
        make()
