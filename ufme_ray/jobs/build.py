"""Step 2 of compaction: build every shard of the new epoch at once, one Ray task per shard.

Each task runs `gallery.build.build_snapshot` (current snapshot + the shard's log after its
watermark -> live set -> exact or IVF-PQ index -> the shard's parts under the new epoch) and
logs its progress, which Ray forwards into the job log. Tasks are not retried: a retry would
find its parts already written (objects are write-once); the next run builds a fresh epoch.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable

import ray

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.build import ShardBuild, build_memory_bytes, build_snapshot
from ufme_ray.gallery.encryption import open_configured_storage
from ufme_ray.gallery.log_segments import LogReader
from ufme_ray.gallery.manifest import Manifest
from ufme_ray.gallery.storage import ObjectStore
from ufme_ray.jobs.logs import configure_logging

logger = logging.getLogger(__name__)


class BuildDeadlineError(TimeoutError):
    """Some shards were still building when the time ran out; their tasks were cancelled."""


def build_shard(settings_json: str, shard: int, epoch: int, *, dim: int) -> ShardBuild:
    """The task body: build shard `shard` of `epoch` and write its parts; returns what it built.

    `settings_json` is `UfmeSettings.transport_json()`: the task opens the store as the shards do
    (encrypting templates when a key is configured, so compaction rewrites them under it).
    """
    configure_logging()
    settings = UfmeSettings.model_validate_json(settings_json)
    started = time.monotonic()
    indexed = 0

    def progress(rows: int) -> None:
        nonlocal indexed
        indexed += rows
        logger.info("shard %d: %d vectors indexed (%.0f s)", shard, indexed, time.monotonic() - started)

    result = build_snapshot(
        open_configured_storage(settings),
        shard,
        epoch,
        num_shards=settings.gallery.num_shards,
        dim=dim,
        settings=settings.gallery,
        work_dir=settings.compaction.work_dir or tempfile.gettempdir(),
        progress=progress,
    )
    logger.info(
        "shard %d built in %.1f s: %d vectors (%s), %d dropped, watermark %d",
        shard, time.monotonic() - started, result.info.count, result.info.params.kind,
        result.vectors_dropped, result.info.watermark,
    )
    return result


def _expected_rows(store: ObjectStore, shard: int, base: Manifest | None) -> int:
    """Snapshot rows plus events logged since (an upper bound on the live set)."""
    info = base.shards[shard] if base is not None else None
    rows, watermark = (info.count, info.watermark) if info is not None else (0, 0)
    return rows + max(0, LogReader(store, shard).last_seq - watermark)


def _largest_node_memory() -> int:
    return int(max((n["Resources"].get("memory", 0) for n in ray.nodes() if n["Alive"]), default=0))


def build_all(
    store: ObjectStore,
    settings: UfmeSettings,
    epoch: int,
    *,
    dim: int,
    base: Manifest | None,
    remaining_s: Callable[[], float],
    on_built: Callable[[ShardBuild], None] = lambda built: None,
) -> list[ShardBuild]:
    """Build every shard of `epoch` in parallel; returns their builds in shard order.

    Blocks until all are built, at most `remaining_s()`. Raises the first task's error, or
    BuildDeadlineError; either way the other tasks are cancelled and the epoch is left without a
    manifest (abandoned). `on_built` runs as each shard finishes.
    """
    task = ray.remote(build_shard)
    num_shards = settings.gallery.num_shards
    settings_json = settings.transport_json()
    ceiling = _largest_node_memory()
    pending: dict[ray.ObjectRef, int] = {}
    for shard in range(num_shards):
        memory = build_memory_bytes(_expected_rows(store, shard, base), dim)
        if ceiling and memory > ceiling:
            logger.warning("shard %d may need %.1f GiB, more than any node offers; asking for %.1f GiB",
                           shard, memory / 2**30, ceiling / 2**30)
            memory = ceiling
        ref = task.options(
            name=f"ufme-compact-shard-{shard}",
            num_cpus=settings.compaction.task_num_cpus,
            memory=memory,
            max_retries=0,
        ).remote(settings_json, shard, epoch, dim=dim)
        pending[ref] = shard
    logger.info("building epoch %d: %d shard tasks submitted", epoch, num_shards)
    built: dict[int, ShardBuild] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(remaining_s(), 0))
            if not done:
                raise BuildDeadlineError(f"shards {sorted(pending.values())} were still building at the deadline")
            shard = pending.pop(done[0])
            built[shard] = ray.get(done[0])
            logger.info("%d of %d shards built", len(built), num_shards)
            on_built(built[shard])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    return [built[shard] for shard in range(num_shards)]
