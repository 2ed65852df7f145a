"""What each environment's serveConfigV2 must say on top of serve_config.yaml, written out for the
manifest and CLI tests (never read from serve-overrides.yaml nor merged by render.apply_overrides)."""

SHARDS = {"staging": 2, "production": 5}

OVERRIDDEN_ARGS = {
    "staging": {"shard_num_cpus": 0, "shard_resources": {"ufme_shard": 1}},
    "production": {"shard_num_cpus": 0, "shard_resources": {"ufme_shard": 1}},
}
OVERRIDDEN_AUTOSCALING = {
    "staging": {},
    "production": {
        "Gateway": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 24},
        "Detector": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 8},
        "Quality": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
        "Liveness": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 8},
        "Embedder": {"min_replicas": 2, "max_replicas": 8, "target_ongoing_requests": 8},
        "Searcher": {"min_replicas": 2, "max_replicas": 4, "target_ongoing_requests": 16},
    },
}
