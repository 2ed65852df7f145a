"""The compaction lock: a named Ray actor owned by the compaction job's driver.

Why this design:
- Ray's GCS registers actor names atomically. When two drivers create `ufme-compaction-lock` in
  one namespace at the same moment, exactly one gets the actor and the other gets
  `ActorAlreadyExistsError`.
- The actor is *not* detached: it shares its owner's fate. If the driver exits or is killed
  (SIGKILL, `ray job stop`, its node lost, the job's deadline), Ray destroys the actor and frees the
  name. So the lock never outlives the job that holds it, and there is no lease to renew or
  expire. A detached actor or a lock object in storage would outlive a killed job, and only a
  timeout could break it.
The lock lives in the gallery's namespace ("ufme" for the service), so two compactions of one
gallery never run at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import ray
from ray.actor import ActorHandle
from ray.exceptions import ActorAlreadyExistsError

logger = logging.getLogger(__name__)

LOCK_NAME = "ufme-compaction-lock"


class LockHeldError(RuntimeError):
    """Another compaction holds the lock; `holder` says which job, where and since when."""

    def __init__(self, namespace: str, holder: dict | None) -> None:
        who = (
            f"job {holder['job_id']} (pid {holder['pid']} on {holder['host']}, for {time.time() - holder['since']:.0f} s)"
            if holder
            else "a job that is just starting or ending"
        )
        super().__init__(f"another compaction holds {LOCK_NAME!r} in namespace {namespace!r}: {who}")
        self.holder = holder


class _Lock:
    """Holds nothing but the name and who took it; its lifetime is the lock."""

    def __init__(self, holder: dict) -> None:
        self._holder = holder

    def holder(self) -> dict:
        return self._holder


def acquire(namespace: str) -> ActorHandle:
    """Take the lock for this driver; returns the handle that holds it.

    Blocks until the lock actor is running (it needs no CPU). Raises LockHeldError if another
    driver holds it. Must run in a Ray driver (the actor's owner is the caller).
    """
    holder = {
        "job_id": ray.get_runtime_context().get_job_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.time(),
    }
    try:
        handle = (
            ray.remote(_Lock)
            .options(name=LOCK_NAME, namespace=namespace, lifetime="non_detached", num_cpus=0, max_restarts=0)
            .remote(holder)
        )
        ray.get(handle.holder.remote())
    except ActorAlreadyExistsError:
        raise LockHeldError(namespace, _current_holder(namespace)) from None
    logger.info("took the compaction lock %s/%s", namespace, LOCK_NAME)
    return handle


def _current_holder(namespace: str) -> dict | None:
    try:
        return ray.get(ray.get_actor(LOCK_NAME, namespace=namespace).holder.remote(), timeout=10)
    except (ValueError, ray.exceptions.RayError):
        return None  # released (or dying) since our attempt


def release(handle: ActorHandle) -> None:
    """Give the lock back now, instead of when the driver exits."""
    ray.kill(handle, no_restart=True)
    logger.info("released the compaction lock")


def is_held(namespace: str) -> bool:
    """Whether some driver holds the lock in `namespace` (a snapshot: it may change at once)."""
    try:
        ray.get_actor(LOCK_NAME, namespace=namespace)
    except ValueError:
        return False
    return True
