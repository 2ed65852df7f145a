"""The audit writer's group commit: a record waits for no window, records that arrive while a write
is in flight share the next object, and every record is durable when `record` returns."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from ufme_ray.audit import PREFIX, AuditRecord, AuditWriter, decode_batch
from ufme_ray.gallery.storage import open_storage


def record(n: int) -> AuditRecord:
    return AuditRecord(time=time.time(), request_id=f"r{n}", key_id="k", operation="identify", outcome="200")


class SlowStore:
    """A file store whose writes take `delay_s`; counts writes started."""

    def __init__(self, folder: Path, delay_s: float):
        self._store = open_storage(folder.as_uri())
        self.delay_s = delay_s
        self.writes = 0
        self.in_flight = threading.Event()

    def write(self, key: str, data: bytes) -> None:
        self.writes += 1
        self.in_flight.set()
        time.sleep(self.delay_s)
        self._store.write(key, data)
        self.in_flight.clear()

    def list(self, prefix: str) -> list[str]:
        return self._store.list(prefix)

    def read(self, key: str) -> bytes:
        return self._store.read(key)


def stored_ids(store: SlowStore) -> list[str]:
    return sorted(r.request_id for key in store.list(PREFIX) for r in decode_batch(key, store.read(key)))


def test_each_record_is_durable_when_record_returns_without_a_waiting_window(tmp_path, monkeypatch):
    store = SlowStore(tmp_path, delay_s=0.0)
    writer = AuditWriter(store)
    waits: list[float] = []
    real_sleep, this_thread = asyncio.sleep, threading.get_ident()

    async def watched_sleep(delay: float, *args):  # a fixed window would put each request's answer off by it
        # `asyncio.sleep` is the module's, patched for every thread: event loops that other tests
        # left running in this process (Ray's, Serve's) sleep as before and are not counted.
        if threading.get_ident() != this_thread:
            return await real_sleep(delay, *args)
        waits.append(delay)

    monkeypatch.setattr("ufme_ray.audit.asyncio.sleep", watched_sleep)

    async def one_after_another() -> list[list[str]]:
        seen = []
        for n in range(3):
            await writer.record(record(n))
            seen.append(stored_ids(store))
        return seen

    assert asyncio.run(one_after_another()) == [["r0"], ["r0", "r1"], ["r0", "r1", "r2"]]
    assert store.writes == 3 and waits == []


def test_records_arriving_during_a_write_share_the_next_object(tmp_path):
    store = SlowStore(tmp_path, delay_s=0.2)
    writer = AuditWriter(store)

    async def burst() -> None:
        first = asyncio.create_task(writer.record(record(0)))
        while not store.in_flight.is_set():  # the first write has started
            await asyncio.sleep(0.001)
        await asyncio.gather(first, *(writer.record(record(n)) for n in range(1, 21)))

    asyncio.run(burst())
    assert store.writes == 2
    assert stored_ids(store) == sorted(f"r{n}" for n in range(21))
