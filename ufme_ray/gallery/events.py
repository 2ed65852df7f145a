"""Gallery events and the segment codec of the event log.

An event is an immutable fact about one shard: an enrolment (one template of one subject), the
deletion of a subject (all of its templates enrolled before the delete), a change to the registry
of galleries (shard 0 only, `gallery.galleries`), or the erasure of a deleted gallery's templates.
The log gives each event a per-shard sequence number: strictly increasing, without gaps, from 1.

Segment layout (little-endian), written once and never changed:

    header  b"UFMESEG1" | u32 shard | u64 writer_epoch | u64 first_seq | u32 count | u32 crc32(header)
    record  u32 payload_len | u32 crc32(payload) | payload            (count times, seqs consecutive)
    footer  b"UFMEEND1" | u32 count | u64 last_seq | u32 crc32(footer)

    payload u64 seq | u8 kind | f64 timestamp | u16 len | subject_id utf-8
            enrol only: i64 template_id | f32 quality | u32 dim | dim × f32 vector
            keyed enrol only (kind 3): then 32 bytes request (see `EnrolEvent.request`)
            gallery (kind 4; subject_id is the gallery id): u8 action | u32 len | details JSON utf-8
            gallery erase (kind 5; subject_id is the gallery id): u64 generation

Every record carries its own checksum, so a reader names the first damaged record; the footer
makes a segment cut at a record boundary (a torn write) as detectable as one cut mid-record.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

SEGMENT_MAGIC = b"UFMESEG1"
FOOTER_MAGIC = b"UFMEEND1"
MAX_SUBJECT_ID_BYTES = 1024

_HEADER = struct.Struct("<8sIQQI")
_HEADER_CRC = struct.Struct("<I")
_RECORD_HEAD = struct.Struct("<II")
_PAYLOAD_HEAD = struct.Struct("<QBdH")
_ENROL_TAIL = struct.Struct("<qfI")
_FOOTER = struct.Struct("<8sIQ")
_KIND_ENROL = 1
_KIND_DELETE = 2
# An enrolment made under a request key; its own kind so that segments written before keys
# existed decode unchanged.
_KIND_ENROL_KEYED = 3
_KIND_GALLERY = 4
_KIND_ERASE_GALLERY = 5
_GALLERY_TAIL = struct.Struct("<BI")
_ERASE_TAIL = struct.Struct("<Q")
GALLERY_ACTIONS = ("create", "update", "delete", "purge")
REQUEST_BYTES = 32


class EventLogError(RuntimeError):
    """Base of the event log's errors."""


class CorruptSegmentError(EventLogError):
    """A log segment is damaged or torn; `segment` names it and `reason` says what is wrong."""

    def __init__(self, segment: str, reason: str) -> None:
        super().__init__(f"corrupt log segment {segment}: {reason}")
        self.segment = segment
        self.reason = reason


def _check_subject(subject_id: str) -> None:
    if not isinstance(subject_id, str) or not subject_id:
        raise ValueError(f"subject_id must be a non-empty string, got {subject_id!r}")
    if len(subject_id.encode("utf-8")) > MAX_SUBJECT_ID_BYTES:
        raise ValueError(f"subject_id {subject_id[:40]!r}… is longer than {MAX_SUBJECT_ID_BYTES} UTF-8 bytes")


def _check_timestamp(timestamp: float) -> None:
    if not math.isfinite(timestamp):
        raise ValueError(f"timestamp must be finite, got {timestamp!r}")


@dataclass(frozen=True, eq=False)
class EnrolEvent:
    """One template enrolled: its id (unique across shards), subject, float32 vector, quality, time.

    The vector is stored as given (the shard L2-normalises before it creates the event) and made
    read-only so the event stays immutable. `request`, when given, is the enrolment's request key
    (16 bytes naming the request, 16 bytes fingerprinting what it asked for; `shard_types.RequestKey`)
    so that a retry of the same request finds this template instead of adding another.
    """

    template_id: int
    subject_id: str
    vector: np.ndarray
    quality: float
    timestamp: float
    request: bytes | None = None

    def __post_init__(self) -> None:
        _check_subject(self.subject_id)
        _check_timestamp(self.timestamp)
        if not (-(2**63) <= int(self.template_id) < 2**63):
            raise ValueError(f"template_id {self.template_id} does not fit in int64")
        vector = np.asarray(self.vector)
        if vector.dtype != np.float32 or vector.ndim != 1 or vector.size == 0:
            raise ValueError(f"vector must be a non-empty 1-d float32 array, got {vector.dtype} {vector.shape}")
        if not np.isfinite(vector).all():
            raise ValueError("vector holds NaN or infinity")
        if not math.isfinite(self.quality):
            raise ValueError(f"quality must be finite, got {self.quality!r}")
        if self.request is not None and (not isinstance(self.request, bytes) or len(self.request) != REQUEST_BYTES):
            raise ValueError(f"request must be {REQUEST_BYTES} bytes, got {self.request!r}")
        frozen = vector.copy() if vector.flags.writeable else vector
        frozen.setflags(write=False)
        object.__setattr__(self, "template_id", int(self.template_id))
        object.__setattr__(self, "vector", frozen)
        object.__setattr__(self, "quality", float(self.quality))
        object.__setattr__(self, "timestamp", float(self.timestamp))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EnrolEvent):
            return NotImplemented
        return (
            self.template_id == other.template_id
            and self.subject_id == other.subject_id
            and np.float32(self.quality) == np.float32(other.quality)
            and self.timestamp == other.timestamp
            and self.request == other.request
            and np.array_equal(self.vector, other.vector)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class DeleteEvent:
    """A subject deleted: every template of it enrolled earlier in the shard's log is erased."""

    subject_id: str
    timestamp: float

    def __post_init__(self) -> None:
        _check_subject(self.subject_id)
        _check_timestamp(self.timestamp)
        object.__setattr__(self, "timestamp", float(self.timestamp))


@dataclass(frozen=True, eq=False)
class GalleryEvent:
    """A change to the registry of galleries: `create` (details: description, policy), `update`
    (the details given replace theirs), `delete` (the gallery is being erased), `purge` (every
    shard has erased it: the registry forgets it)."""

    gallery_id: str
    action: str
    timestamp: float
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_subject(self.gallery_id)
        _check_timestamp(self.timestamp)
        if self.action not in GALLERY_ACTIONS:
            raise ValueError(f"gallery action must be one of {GALLERY_ACTIONS}, got {self.action!r}")
        json.dumps(self.details)  # must encode: refused before it is logged, not when written
        object.__setattr__(self, "timestamp", float(self.timestamp))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GalleryEvent):
            return NotImplemented
        return (self.gallery_id, self.action, self.timestamp, self.details) == (
            other.gallery_id, other.action, other.timestamp, other.details
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class EraseGalleryEvent:
    """Every template of the gallery's incarnation `generation` (and earlier) on this shard is erased;
    the shard refuses enrolments into that generation from then on."""

    gallery_id: str
    generation: int
    timestamp: float

    def __post_init__(self) -> None:
        _check_subject(self.gallery_id)
        _check_timestamp(self.timestamp)
        if not 0 <= int(self.generation) < 2**63:
            raise ValueError(f"generation {self.generation} is not a seq")
        object.__setattr__(self, "timestamp", float(self.timestamp))


Event = EnrolEvent | DeleteEvent | GalleryEvent | EraseGalleryEvent


@dataclass(frozen=True)
class SegmentHeader:
    shard: int
    writer_epoch: int
    first_seq: int
    count: int

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


def encode_event(seq: int, event: Event) -> bytes:
    """One record (length, checksum, payload) for `event` at sequence number `seq`."""
    named = event.gallery_id if isinstance(event, (GalleryEvent, EraseGalleryEvent)) else event.subject_id
    subject = named.encode("utf-8")
    if isinstance(event, EnrolEvent):
        vector = event.vector.astype("<f4", copy=False)
        kind = _KIND_ENROL if event.request is None else _KIND_ENROL_KEYED
        payload = b"".join(
            (
                _PAYLOAD_HEAD.pack(seq, kind, event.timestamp, len(subject)),
                subject,
                _ENROL_TAIL.pack(event.template_id, event.quality, vector.size),
                vector.tobytes(),
                event.request or b"",
            )
        )
    elif isinstance(event, DeleteEvent):
        payload = _PAYLOAD_HEAD.pack(seq, _KIND_DELETE, event.timestamp, len(subject)) + subject
    elif isinstance(event, GalleryEvent):
        details = json.dumps(event.details, sort_keys=True).encode("utf-8")
        action = GALLERY_ACTIONS.index(event.action)
        payload = b"".join(
            (
                _PAYLOAD_HEAD.pack(seq, _KIND_GALLERY, event.timestamp, len(subject)),
                subject,
                _GALLERY_TAIL.pack(action, len(details)),
                details,
            )
        )
    elif isinstance(event, EraseGalleryEvent):
        payload = (
            _PAYLOAD_HEAD.pack(seq, _KIND_ERASE_GALLERY, event.timestamp, len(subject))
            + subject
            + _ERASE_TAIL.pack(event.generation)
        )
    else:
        raise TypeError(f"not a gallery event: {type(event).__name__}")
    return _RECORD_HEAD.pack(len(payload), zlib.crc32(payload)) + payload


def encode_segment(shard: int, writer_epoch: int, first_seq: int, events: list[Event]) -> bytes:
    """A complete segment holding `events` at sequence numbers first_seq, first_seq+1, …"""
    if not events:
        raise ValueError("a segment holds at least one event")
    head = _HEADER.pack(SEGMENT_MAGIC, shard, writer_epoch, first_seq, len(events))
    records = [encode_event(first_seq + i, event) for i, event in enumerate(events)]
    foot = _FOOTER.pack(FOOTER_MAGIC, len(events), first_seq + len(events) - 1)
    return b"".join(
        [head, _HEADER_CRC.pack(zlib.crc32(head)), *records, foot, _HEADER_CRC.pack(zlib.crc32(foot))]
    )


def decode_segment(data: bytes, name: str) -> tuple[SegmentHeader, list[tuple[int, Event]]]:
    """Parse and verify a whole segment; `name` is used in errors.

    Raises CorruptSegmentError for a bad header, a record whose checksum fails, a record or footer
    cut short (torn), a sequence number out of order, or bytes after the footer.
    """
    view = memoryview(data)
    head_size = _HEADER.size + _HEADER_CRC.size
    if len(view) < head_size:
        raise CorruptSegmentError(name, f"torn: {len(view)} bytes, shorter than the header")
    magic, shard, epoch, first_seq, count = _HEADER.unpack_from(view, 0)
    (head_crc,) = _HEADER_CRC.unpack_from(view, _HEADER.size)
    if magic != SEGMENT_MAGIC or zlib.crc32(view[: _HEADER.size]) != head_crc:
        raise CorruptSegmentError(name, "header checksum or magic mismatch")
    header = SegmentHeader(shard=shard, writer_epoch=epoch, first_seq=first_seq, count=count)
    events: list[tuple[int, Event]] = []
    offset = head_size
    for index in range(count):
        if offset + _RECORD_HEAD.size > len(view):
            raise CorruptSegmentError(name, f"torn: record {index} of {count} missing at byte {offset}")
        length, crc = _RECORD_HEAD.unpack_from(view, offset)
        start = offset + _RECORD_HEAD.size
        payload = view[start : start + length]
        if len(payload) < length:
            raise CorruptSegmentError(name, f"torn: record {index} of {count} cut short at byte {offset}")
        if zlib.crc32(payload) != crc:
            raise CorruptSegmentError(name, f"record {index} at byte {offset}: checksum mismatch")
        seq, event = _decode_payload(payload, name, index)
        if seq != first_seq + index:
            raise CorruptSegmentError(name, f"record {index} has seq {seq}, expected {first_seq + index}")
        events.append((seq, event))
        offset = start + length
    foot_size = _FOOTER.size + _HEADER_CRC.size
    if offset + foot_size > len(view):
        raise CorruptSegmentError(name, f"torn: footer missing at byte {offset}")
    foot_magic, foot_count, foot_last = _FOOTER.unpack_from(view, offset)
    (foot_crc,) = _HEADER_CRC.unpack_from(view, offset + _FOOTER.size)
    if (
        foot_magic != FOOTER_MAGIC
        or zlib.crc32(view[offset : offset + _FOOTER.size]) != foot_crc
        or foot_count != count
        or foot_last != header.last_seq
    ):
        raise CorruptSegmentError(name, f"footer at byte {offset} does not match the header")
    if offset + foot_size != len(view):
        raise CorruptSegmentError(name, f"{len(view) - offset - foot_size} unexpected bytes after the footer")
    return header, events


def _decode_payload(payload: memoryview, name: str, index: int) -> tuple[int, Event]:
    try:
        seq, kind, timestamp, subject_len = _PAYLOAD_HEAD.unpack_from(payload, 0)
        pos = _PAYLOAD_HEAD.size
        subject_id = bytes(payload[pos : pos + subject_len]).decode("utf-8")
        pos += subject_len
        if kind == _KIND_DELETE:
            if pos != len(payload):
                raise ValueError("delete record has trailing bytes")
            return seq, DeleteEvent(subject_id=subject_id, timestamp=timestamp)
        if kind == _KIND_GALLERY:
            action, length = _GALLERY_TAIL.unpack_from(payload, pos)
            pos += _GALLERY_TAIL.size
            if pos + length != len(payload):
                raise ValueError("gallery record's details do not fill it")
            details = json.loads(bytes(payload[pos:]).decode("utf-8"))
            return seq, GalleryEvent(subject_id, GALLERY_ACTIONS[action], timestamp, details)
        if kind == _KIND_ERASE_GALLERY:
            (generation,) = _ERASE_TAIL.unpack_from(payload, pos)
            if pos + _ERASE_TAIL.size != len(payload):
                raise ValueError("gallery erase record has trailing bytes")
            return seq, EraseGalleryEvent(subject_id, generation, timestamp)
        if kind not in (_KIND_ENROL, _KIND_ENROL_KEYED):
            raise ValueError(f"unknown event kind {kind}")
        template_id, quality, dim = _ENROL_TAIL.unpack_from(payload, pos)
        pos += _ENROL_TAIL.size
        request_len = REQUEST_BYTES if kind == _KIND_ENROL_KEYED else 0
        if pos + 4 * dim + request_len != len(payload):
            raise ValueError(f"vector of {dim} floats does not fill the record")
        vector = np.frombuffer(payload, dtype="<f4", count=dim, offset=pos).astype(np.float32)
        request = bytes(payload[pos + 4 * dim :]) if request_len else None
        event = EnrolEvent(
            template_id=template_id, subject_id=subject_id, vector=vector, quality=quality, timestamp=timestamp,
            request=request,
        )
        return seq, event
    except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
        # The checksum matched, so this is a writer bug or a foreign file, not bit rot: still refuse.
        raise CorruptSegmentError(name, f"record {index}: undecodable ({exc})") from exc
