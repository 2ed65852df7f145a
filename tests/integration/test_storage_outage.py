"""A shard actor through an S3 outage: writes are refused as not-ready (never acknowledged) while
the server is down, and the actor comes back by itself, with every acknowledged template, once it
is up again. The session's S3 server is restarted on the same ports and data folder.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import ray

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.routing import shard_for
from ufme_ray.serving.shard_actor import MAX_CONCURRENCY, ShardActor, ShardNotReadyError

pytestmark = [pytest.mark.ray, pytest.mark.s3]

DIM = 16
NAMESPACE = "ufme-outage"


def subject_of_shard_zero(tag: str) -> str:
    return next(s for s in (f"{tag}-{i}" for i in range(1000)) if shard_for(s, 1) == 0)


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def wait_ready(actor, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ray.get(actor.ready.remote())["ready"]:
        assert time.monotonic() < deadline, ray.get(actor.ready.remote())
        time.sleep(0.2)


@pytest.fixture
def shard_actor(ray_session, s3_server, s3_uri):
    settings = UfmeSettings.load(storage_uri=s3_uri, gallery={"num_shards": 1})
    actor = (
        ray.remote(ShardActor)
        .options(name=f"outage-{uuid.uuid4().hex[:8]}", namespace=NAMESPACE, max_restarts=0,
                 max_concurrency=MAX_CONCURRENCY, num_cpus=0.05, runtime_env={"env_vars": s3_server.env})
        .remote(settings.transport_json(), 0, DIM)
    )
    wait_ready(actor)
    yield actor
    ray.kill(actor, no_restart=True)


def test_writes_fail_not_ready_during_an_outage_and_the_shard_heals(shard_actor, s3_server):
    kept = subject_of_shard_zero("kept")
    [(kept_template, _)] = ray.get(shard_actor.enrol.remote([(kept, vector(1), 0.9)]))

    s3_server.stop(kill=True)
    try:
        for attempt in range(3):  # the first write loses the log writer; the next ones meet a restoring shard
            with pytest.raises(ray.exceptions.RayTaskError) as refused:
                ray.get(shard_actor.enrol.remote([(subject_of_shard_zero(f"outage{attempt}"), vector(2 + attempt), 0.9)]))
            assert isinstance(refused.value.cause, ShardNotReadyError), refused.value
        assert ray.get(shard_actor.ready.remote())["ready"] is False
    finally:
        s3_server.start()

    wait_ready(shard_actor)
    after = subject_of_shard_zero("after")
    [(after_template, _)] = ray.get(shard_actor.enrol.remote([(after, vector(9), 0.9)]))
    assert [t.template_id for t in ray.get(shard_actor.templates.remote(kept))] == [kept_template]
    assert [t.template_id for t in ray.get(shard_actor.templates.remote(after))] == [after_template]
    hits = ray.get(shard_actor.search.remote(vector(1)[None, :], 1))
    assert hits[0][0].subject_id == kept
