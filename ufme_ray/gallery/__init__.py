"""The gallery: per-shard event log, shard index and snapshots in object storage. No Ray here.

storage       one pyarrow.fs object store per URI (file:// or s3://), durable write-once objects
events        enrol/delete events and the checksummed segment codec
log           the event log contract, its typed errors and the in-memory test double
object_log    the per-shard log in an object store: group commit, writer-epoch fencing
log_segments  the stored log without a writer: listing, reading, deleting through a watermark
index         exact IndexFlatIP while small, IVF-PQ + fp16 exact rerank once large
manifest      what an epoch's MANIFEST records of each shard's snapshot parts
epochs        writing and reading the MANIFEST, the CURRENT pointer, the next epoch number
snapshot      a shard's snapshot parts: written once, verified on load
build         snapshot + log -> live set -> new index and epoch (the core of compaction)
shard         `Shard`, the object a shard actor wraps: restore, enrol, delete, search, swap
shard_types   what a `Shard` takes and returns, and its errors
delta         the shard's exact index of templates enrolled after its snapshot
locks         the shard's reader-writer lock
routing       subject -> shard, and the template id layout
"""
