"""Ray Job entry points: thin shells around gallery/ (the pure logic).

compact   `python -m ufme_ray.jobs.compact`: the compaction job (lock, build, commit, swap, retention)
lock      the compaction lock, a named actor that dies with the job's driver
swap      asking every shard actor to swap to the new epoch
metrics   the job's Ray metrics
submit    submitting and following the job through JobSubmissionClient (`ufme-ray [k8s] compact`)
"""
