"""The event log contract, run on every backend (in-memory, object store on file:// and s3://)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from ufme_ray.config import LogSettings
from ufme_ray.gallery.events import DeleteEvent, EnrolEvent, Event, encode_segment
from ufme_ray.gallery.log import (
    CorruptLogError,
    CorruptSegmentError,
    EventLog,
    FencedError,
    InMemoryEventLog,
    InMemoryLogBackend,
    LogUnavailableError,
)
from ufme_ray.gallery.object_log import ObjectStoreEventLog
from ufme_ray.gallery.storage import ObjectStore, open_storage


def enrol(n: int, subject: str = "s") -> EnrolEvent:
    vector = np.full(4, n, np.float32)
    return EnrolEvent(template_id=n, subject_id=subject, vector=vector, quality=0.5, timestamp=float(n))


class EventLogContract:
    """Subclasses provide `open_writer()`: a new writer (new epoch) on the same storage each call."""

    def open_writer(self) -> EventLog:
        raise NotImplementedError

    def test_seqs_are_consecutive_from_one(self) -> None:
        log = self.open_writer()
        assert log.last_seq == 0
        assert log.append([enrol(1), enrol(2)]) == [1, 2]
        assert log.append([DeleteEvent("s", 3.0)]) == [3]
        assert log.last_seq == 3

    def test_read_returns_events_after_a_seq_in_order(self) -> None:
        log = self.open_writer()
        events: list[Event] = [enrol(1), DeleteEvent("s", 2.0), enrol(3, "t")]
        log.append(events[:2])
        log.append(events[2:])
        assert list(log.read(0)) == list(zip([1, 2, 3], events))
        assert list(log.read(2)) == [(3, events[2])]
        assert list(log.read(3)) == []

    def test_empty_or_foreign_batches_are_refused(self) -> None:
        log = self.open_writer()
        with pytest.raises(ValueError):
            log.append([])
        with pytest.raises(TypeError):
            log.append(["not an event"])  # type: ignore[list-item]
        assert log.last_seq == 0

    def test_concurrent_appends_get_unique_gap_free_seqs(self) -> None:
        log = self.open_writer()
        acked: dict[int, Event] = {}
        lock = threading.Lock()
        start = threading.Barrier(8)

        def worker(w: int) -> None:
            start.wait()
            for i in range(10):
                event = enrol(w * 100 + i, f"w{w}")
                [seq] = log.append([event])
                with lock:
                    acked[seq] = event

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(acked) == list(range(1, 81))
        assert dict(log.read(0)) == acked
        # Per writer thread, its own events keep their order.
        for w in range(8):
            mine = [e.template_id for _, e in sorted(acked.items()) if e.subject_id == f"w{w}"]
            assert mine == sorted(mine)

    def test_new_writer_sees_everything_acknowledged(self) -> None:
        first = self.open_writer()
        first.append([enrol(1), enrol(2)])
        second = self.open_writer()
        assert second.writer_epoch > first.writer_epoch
        assert second.last_seq == 2
        assert [seq for seq, _ in second.read(0)] == [1, 2]

    def test_stale_writer_is_fenced_and_never_interleaves(self) -> None:
        stale = self.open_writer()
        stale.append([enrol(1)])
        current = self.open_writer()
        with pytest.raises(FencedError):
            stale.append([enrol(99, "late")])
        with pytest.raises(FencedError):
            stale.append([enrol(98, "later")])
        assert current.append([enrol(2)]) == [2]
        assert [(seq, e.template_id) for seq, e in current.read(0)] == [(1, 1), (2, 2)]

    def test_delete_through_erases_covered_events(self) -> None:
        log = self.open_writer()
        for n in (1, 2, 3):
            log.append([enrol(n)])
        assert log.delete_through(2) == 2
        assert [seq for seq, _ in log.read(2)] == [3]
        with pytest.raises(CorruptLogError):
            list(log.read(0))
        assert log.append([enrol(4)]) == [4]

    def test_seqs_continue_after_everything_was_deleted(self) -> None:
        log = self.open_writer()
        log.append([enrol(1), enrol(2)])
        log.delete_through(2)
        reopened = self.open_writer()
        assert reopened.last_seq == 2
        assert list(reopened.read(2)) == []
        with pytest.raises(CorruptLogError):
            list(reopened.read(1))
        assert reopened.append([enrol(3)]) == [3]

    def test_closed_log_refuses_appends(self) -> None:
        log = self.open_writer()
        log.append([enrol(1)])
        log.close()
        with pytest.raises(LogUnavailableError):
            log.append([enrol(2)])
        assert [seq for seq, _ in log.read(0)] == [1]

    def test_async_append(self) -> None:
        log = self.open_writer()

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(log.append_async([enrol(n)]) for n in range(5)))

        assert sorted(seq for seqs in asyncio.run(main()) for seq in seqs) == [1, 2, 3, 4, 5]


class TestInMemoryLog(EventLogContract):
    @pytest.fixture(autouse=True)
    def _backend(self) -> None:
        self.backend = InMemoryLogBackend()

    def open_writer(self) -> EventLog:
        return InMemoryEventLog(self.backend, shard=0)


class ObjectStoreLogContract(EventLogContract):
    store: ObjectStore
    settings = LogSettings(group_commit_window_s=0.002)

    def open_writer(self) -> EventLog:
        return ObjectStoreEventLog.open(self.store, 0, self.settings)

    def segments(self) -> list[str]:
        return [k for k in self.store.list("events/shard-0") if k.endswith(".seg")]

    def test_concurrent_appends_are_group_committed(self) -> None:
        log = ObjectStoreEventLog.open(self.store, 0, LogSettings(group_commit_window_s=0.05))
        start = threading.Barrier(20)
        seqs: list[int] = []

        def worker(n: int) -> None:
            start.wait()
            seqs.extend(log.append([enrol(n)]))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(seqs) == list(range(1, 21))
        assert len(self.segments()) < 10  # 20 appends, a few storage round trips

    def test_max_events_splits_groups(self) -> None:
        log = ObjectStoreEventLog.open(self.store, 0, LogSettings(group_commit_window_s=0.0, group_commit_max_events=2))
        assert log.append([enrol(1), enrol(2), enrol(3)]) == [1, 2, 3]  # one batch is never split
        assert len(self.segments()) == 1

    def test_torn_tail_segment_is_named(self) -> None:
        log = self.open_writer()
        log.append([enrol(1)])
        whole = encode_segment(0, log.writer_epoch, 2, [enrol(2), enrol(3)])
        key = f"events/shard-0/{2:020d}-{3:020d}-e{log.writer_epoch:010d}.seg"
        self.store.write(key, whole[: len(whole) - 30])
        with pytest.raises(CorruptSegmentError) as info:
            list(log.read(0))
        assert info.value.segment == key and "torn" in info.value.reason

    def test_corrupt_segment_is_named(self) -> None:
        log = self.open_writer()
        log.append([enrol(1)])
        log.append([enrol(2)])
        [first, _] = self.segments()
        data = bytearray(self.store.read(first))
        data[60] ^= 0x01
        self.store.delete([first])
        self.store.write(first, bytes(data))
        with pytest.raises(CorruptSegmentError) as info:
            list(log.read(0))
        assert info.value.segment == first
        assert [seq for seq, _ in log.read(1)] == [2]  # undamaged segments stay readable

    def test_fenced_segment_is_ignored_then_erased(self) -> None:
        stale = self.open_writer()
        stale.append([enrol(1)])
        current = self.open_writer()
        with pytest.raises(FencedError):
            stale.append([enrol(99, "late")])
        assert len(self.segments()) == 2  # the stale writer's PUT landed …
        current.append([enrol(2)])
        assert [e.template_id for _, e in current.read(0)] == [1, 2]  # … but is never read
        assert current.delete_through(0) == 1  # and goes at the next compaction
        assert len(self.segments()) == 2

    def test_missing_middle_segment_is_a_gap(self) -> None:
        log = self.open_writer()
        for n in (1, 2, 3):
            log.append([enrol(n)])
        self.store.delete([self.segments()[1]])
        with pytest.raises(CorruptLogError, match="gap"):
            list(log.read(0))

    def test_acknowledged_appends_survive_sigkill(self) -> None:
        script = textwrap.dedent(
            f"""
            import sys, threading
            import numpy as np
            from ufme_ray.config import LogSettings
            from ufme_ray.gallery.events import EnrolEvent
            from ufme_ray.gallery.object_log import ObjectStoreEventLog
            from ufme_ray.gallery.storage import open_storage
            settings = LogSettings(group_commit_window_s=0.001)
            log = ObjectStoreEventLog.open(open_storage({self.store.uri!r}), 0, settings)
            out = threading.Lock()
            def worker(w):
                n = 0
                while True:
                    n += 1
                    tid = w * 1_000_000 + n
                    event = EnrolEvent(template_id=tid, subject_id=f"w{{w}}", vector=np.full(4, n, np.float32),
                                       quality=1.0, timestamp=0.0)
                    [seq] = log.append([event])
                    with out:
                        sys.stdout.write(f"{{seq}} {{tid}}\\n")
                        sys.stdout.flush()
            for w in range(4):
                threading.Thread(target=worker, args=(w,), daemon=True).start()
            threading.Event().wait()
            """
        )
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
        acked: dict[int, int] = {}
        try:
            assert child.stdout is not None
            for line in child.stdout:
                seq, tid = map(int, line.split())
                acked[seq] = tid
                if len(acked) >= 60:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            remaining, _ = child.communicate(timeout=30)
        for line in remaining.splitlines():  # acknowledged before the kill, still in the pipe
            seq, tid = map(int, line.split())
            acked[seq] = tid
        assert child.returncode == -signal.SIGKILL
        recovered = {seq: event.template_id for seq, event in self.open_writer().read(0)}
        assert len(acked) >= 60
        assert {seq: recovered.get(seq) for seq in acked} == acked


class TestFileStoreLog(ObjectStoreLogContract):
    @pytest.fixture(autouse=True)
    def _backend(self, file_store: ObjectStore) -> None:
        self.store = file_store


@pytest.mark.s3
class TestS3StoreLog(ObjectStoreLogContract):
    @pytest.fixture(autouse=True)
    def _backend(self, s3_uri: str) -> None:
        self.store = open_storage(s3_uri)
