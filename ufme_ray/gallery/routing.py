"""Where things live: which shard holds a subject, and how template ids name their shard.

Python's `hash(str)` is randomised per process (PYTHONHASHSEED), so it cannot route: the first
8 bytes of sha256 of the UTF-8 subject id, modulo the shard count, do — identical in every
process and Python version.
"""

from __future__ import annotations

import hashlib


def shard_for(subject_id: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) owning `subject_id`. Raises ValueError for num_shards < 1."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    digest = hashlib.sha256(subject_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


TEMPLATE_COUNTER_BITS = 48
MAX_SHARDS = 1 << (63 - TEMPLATE_COUNTER_BITS)
_COUNTER_MASK = (1 << TEMPLATE_COUNTER_BITS) - 1


def make_template_id(shard: int, counter: int) -> int:
    """Template ids are positive int64: the shard in the high bits, a per-shard counter below.

    Unique across shards without coordination, and the owning shard is readable from the id.
    """
    if not 0 <= shard < MAX_SHARDS or not 0 < counter <= _COUNTER_MASK:
        raise ValueError(f"template id out of range: shard {shard}, counter {counter}")
    return (shard << TEMPLATE_COUNTER_BITS) | counter


def template_counter(template_id: int) -> int:
    """The per-shard counter part of a template id."""
    return template_id & _COUNTER_MASK
