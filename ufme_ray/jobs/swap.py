"""Step 4 of compaction: ask every shard actor to swap to the new epoch, and wait until all have.

Each shard loads the new snapshot beside the live one and swaps under its write lock
(`gallery.Shard.swap_to`), so searches never fail. A shard that is restoring or restarting is
asked again until it answers; a shard whose actor does not exist is not running, and will
restore the new epoch from CURRENT when it starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError

from ufme_ray.serving.shard_actor import ShardNotReadyError, shard_actor_name

logger = logging.getLogger(__name__)

_RETRY_INTERVAL_S = 1.0


class SwapError(RuntimeError):
    """A shard refused the new epoch (corrupt snapshot, wrong shape, failed shard)."""


class SwapDeadlineError(TimeoutError):
    """Some shards had not swapped when the time ran out; `pending` names them."""

    def __init__(self, pending: list[int]) -> None:
        super().__init__(f"shards {pending} had not swapped by the deadline")
        self.pending = pending


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RayTaskError):
        return isinstance(exc.cause, ShardNotReadyError)
    return isinstance(exc, (ActorUnavailableError, ActorDiedError, RayActorError))


def swap_all(
    num_shards: int,
    namespace: str,
    epoch: int,
    *,
    concurrency: int | None,
    remaining_s: Callable[[], float],
    on_swapped: Callable[[int, dict], None] = lambda shard, stats: None,
) -> dict[int, dict | None]:
    """Swap shards 0..num_shards-1 in `namespace` to `epoch`; returns stats per shard.

    At most `concurrency` shards load at once (None: all). A shard's value is its stats after the
    swap, or None if it is not running. Blocks until every running shard has swapped;
    `remaining_s()` bounds the wait. Raises SwapError if a shard refuses, SwapDeadlineError when
    time runs out. `on_swapped(shard, stats)` runs as each shard finishes.
    """
    results: dict[int, dict | None] = {}
    calls: dict[ray.ObjectRef, int] = {}
    retry_at: dict[int, float] = {}
    queue = list(range(num_shards))
    limit = concurrency or num_shards

    def ask(shard: int) -> None:
        try:
            actor = ray.get_actor(shard_actor_name(shard), namespace=namespace)
        except ValueError:
            logger.info("shard %d is not running; it will restore epoch %d from CURRENT when it starts", shard, epoch)
            results[shard] = None
            return
        calls[actor.swap_to.remote(epoch)] = shard

    def fill() -> None:
        while queue and len(calls) + len(retry_at) < limit:
            ask(queue.pop(0))

    fill()
    while calls or retry_at or queue:
        fill()
        now = time.monotonic()
        for shard in [s for s, at in retry_at.items() if at <= now]:
            del retry_at[shard]
            ask(shard)
        if remaining_s() <= 0:
            for ref in calls:
                ray.cancel(ref)
            raise SwapDeadlineError(sorted([*calls.values(), *retry_at, *queue]))
        wait_s = min(remaining_s(), _RETRY_INTERVAL_S)
        if not calls:
            time.sleep(wait_s)
            continue
        done, _ = ray.wait(list(calls), num_returns=1, timeout=wait_s)
        for ref in done:
            shard = calls.pop(ref)
            try:
                stats = ray.get(ref)
            except Exception as exc:
                if not _retryable(exc):
                    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
                    raise SwapError(f"shard {shard} did not swap to epoch {epoch}: {cause}") from exc
                logger.info("shard %d is not ready to swap (%s); asking again", shard, type(exc).__name__)
                retry_at[shard] = time.monotonic() + _RETRY_INTERVAL_S
                continue
            results[shard] = stats
            logger.info(
                "shard %d serves epoch %d: %d live templates, %d in the delta",
                shard, stats["snapshot_epoch"], stats["live_templates"], stats["delta_rows"],
            )
            on_swapped(shard, stats)
    return results
