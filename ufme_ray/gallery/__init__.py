"""The gallery: per-shard event log, shard index and snapshots in object storage. No Ray here.

storage   one pyarrow.fs object store per URI (file:// or s3://), durable write-once objects
events    enrol/delete events and the checksummed segment codec
log       the per-shard append-only log: group commit, writer-epoch fencing, typed errors
index     exact IndexFlatIP while small, IVF-PQ + fp16 exact rerank once large
snapshot  shard snapshots, the epoch MANIFEST and the CURRENT pointer, verified on load
build     snapshot + log -> live set -> new index and epoch (the core of compaction)
shard     `Shard`, the object a shard actor wraps: restore, enrol, delete, search, swap
routing   subject -> shard, and the template id layout
"""
