"""Building new snapshots (the core of compaction): snapshot + log -> live set -> new index.

`build_snapshot` computes one shard's live set from the current snapshot and the shard's log
after its watermark (deletes applied), builds the index and writes the shard's parts under a new
epoch. `compact` does it for every shard, then writes the manifest and makes the epoch current.

Memory at scale: the log is read twice (first the small per-event metadata to decide which rows
live and where each goes, then the vectors straight into their final row), so the only large
array is the one float32 matrix of live vectors; the old rerank store is memory-mapped from
`work_dir` and the new one is written to `work_dir` and streamed to storage.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ufme_ray.config import GallerySettings
from ufme_ray.gallery.epochs import next_epoch, publish_current, write_manifest
from ufme_ray.gallery.events import DeleteEvent, EnrolEvent, GalleryEvent
from ufme_ray.gallery.galleries import ShardGalleries, gallery_of, sort_key
from ufme_ray.gallery.index import build_index
from ufme_ray.gallery.log_segments import LogReader
from ufme_ray.gallery.manifest import Manifest, ShardSnapshotInfo
from ufme_ray.gallery.routing import template_counter
from ufme_ray.gallery.snapshot import ShardSnapshot, SnapshotRows, load_current_snapshot, write_shard_snapshot
from ufme_ray.gallery.storage import ObjectStore

logger = logging.getLogger(__name__)

_COPY_CHUNK = 65_536


@dataclasses.dataclass(frozen=True)
class LiveSet:
    """One shard's live templates through `watermark`, rows grouped by subject (sorted by gallery,
    then subject), and the shard's gallery state at the watermark."""

    rows: SnapshotRows
    vectors: np.ndarray  # float32 (n, d), row-aligned with `rows`
    watermark: int
    next_template_counter: int
    vectors_in: int  # snapshot rows + logged enrolments considered, before deletes were applied
    galleries: ShardGalleries


@dataclasses.dataclass(frozen=True)
class ShardBuild:
    """What building one shard produced: its manifest entry and how many vectors went in."""

    info: ShardSnapshotInfo
    vectors_in: int

    @property
    def vectors_dropped(self) -> int:
        """Templates of deleted subjects left out of the new snapshot."""
        return self.vectors_in - self.info.count


def build_memory_bytes(rows: int, dim: int) -> int:
    """Peak memory of `build_snapshot` for about `rows` vectors: a hint for the scheduler.

    The live float32 matrix, the old snapshot's flat index and the new index are alive together
    (three copies of rows × dim × 4 bytes at most), plus the interpreter, FAISS and Arrow.
    """
    if rows < 0 or dim < 1:
        raise ValueError(f"need rows >= 0 and dim >= 1, got {rows} and {dim}")
    return 3 * rows * dim * 4 + (384 << 20)


def _live_requests(
    base_requests: dict[int, bytes], base_live: np.ndarray, log_requests: dict[int, bytes], log_live: np.ndarray,
    target: np.ndarray,
) -> dict[int, bytes]:
    """The request keys of live rows, by final row (`target` maps live rows, base then log, to it)."""
    kept: dict[int, bytes] = {}
    for rows, live, offset in ((base_requests, base_live, 0), (log_requests, log_live, int(base_live.sum()))):
        rank = np.cumsum(live) - 1
        for row, request in rows.items():
            if live[row]:
                kept[int(target[offset + rank[row]])] = request
    return kept


def live_set(store: ObjectStore, base: ShardSnapshot, *, dim: int) -> LiveSet:
    """Apply the shard's log after `base.watermark` to `base`: the live rows and their vectors.

    A template is live if no delete of its subject, and no erasure of its gallery, follows its
    enrolment. The watermark is the last seq of the log as listed when this starts; later appends
    belong to the next compaction.
    """
    reader = LogReader(store, base.shard)
    watermark = max(base.watermark, reader.last_seq)
    # Pass 1: metadata only.
    seqs, template_ids, quality, enrolled_at = array("q"), array("q"), array("f"), array("d")
    subjects: list[str] = []
    requests: dict[int, bytes] = {}  # position among the logged enrolments -> request key
    last_delete: dict[str, int] = {}
    erased_at: dict[str, int] = {}  # gallery -> seq of its last erasure
    galleries = ShardGalleries.from_json(base.galleries.to_json())
    counter = base.next_template_counter
    for seq, event in reader.read(base.watermark):
        if isinstance(event, EnrolEvent):
            seqs.append(seq)
            template_ids.append(event.template_id)
            quality.append(event.quality)
            enrolled_at.append(event.timestamp)
            if event.request is not None:
                requests[len(subjects)] = event.request
            subjects.append(event.subject_id)
            counter = max(counter, template_counter(event.template_id) + 1)
        elif isinstance(event, DeleteEvent):
            last_delete[event.subject_id] = seq
        elif isinstance(event, GalleryEvent):
            galleries.registry.apply(seq, event)
        else:
            erased_at[event.gallery_id] = seq
            galleries.erase(event.gallery_id, event.generation)

    def dead_through(subject: str) -> int:
        return max(last_delete.get(subject, 0), erased_at.get(gallery_of(subject), 0))

    log_live = np.fromiter(
        (seq > dead_through(subject) for seq, subject in zip(seqs, subjects)), dtype=bool, count=len(seqs)
    )
    base_rows = base.rows
    base_subject_live = np.fromiter(
        (dead_through(subject) == 0 for subject in base_rows.subjects), dtype=bool, count=len(base_rows.subjects)
    )
    base_live = np.repeat(base_subject_live, np.diff(base_rows.starts))

    # Group all live rows by subject: codes into the sorted union of subjects, then sort.
    log_subjects = [s for s, live in zip(subjects, log_live) if live]
    all_subjects = sorted(
        {*(s for s, live in zip(base_rows.subjects, base_subject_live) if live), *log_subjects}, key=sort_key
    )
    code_of = {subject: code for code, subject in enumerate(all_subjects)}
    base_codes = np.array([code_of.get(s, -1) for s in base_rows.subjects], dtype=np.int64)
    codes = np.concatenate(
        [
            np.repeat(base_codes, np.diff(base_rows.starts))[base_live],
            np.fromiter((code_of[s] for s in log_subjects), dtype=np.int64, count=len(log_subjects)),
        ]
    )
    ids = np.concatenate([base_rows.template_ids[base_live], np.asarray(template_ids, np.int64)[log_live]])
    order = np.lexsort((ids, codes))
    target = np.empty_like(order)
    target[order] = np.arange(len(order))  # final row of each live row, in (base, log) order
    n_base_live = int(base_live.sum())

    # Pass 2: vectors straight into their final rows.
    vectors = np.empty((len(order), dim), np.float32)
    base_targets = target[:n_base_live]
    done = 0
    for start in range(0, base.index.ntotal, _COPY_CHUNK):
        stop = min(start + _COPY_CHUNK, base.index.ntotal)
        mask = base_live[start:stop]
        count = int(mask.sum())
        if count:
            vectors[base_targets[done : done + count]] = base.index.vectors(start, stop)[mask]
            done += count
    log_targets = iter(target[n_base_live:].tolist())
    position = 0
    for seq, event in reader.read(base.watermark):
        if isinstance(event, EnrolEvent):
            if log_live[position]:
                vectors[next(log_targets)] = event.vector
            position += 1
    rows = SnapshotRows(
        template_ids=ids[order],
        quality=np.concatenate([base_rows.quality[base_live], np.asarray(quality, np.float32)[log_live]])[order],
        enrolled_at=np.concatenate(
            [base_rows.enrolled_at[base_live], np.asarray(enrolled_at, np.float64)[log_live]]
        )[order],
        subjects=all_subjects,
        starts=np.searchsorted(codes[order], np.arange(len(all_subjects) + 1), side="left").astype(np.int64),
        requests=_live_requests(base_rows.requests, base_live, requests, log_live, target),
    )
    logger.info(
        "shard %d live set through seq %d: %d rows (%d from snapshot epoch %d, %d of %d logged enrolments)",
        base.shard, watermark, len(order), n_base_live, base.epoch, int(log_live.sum()), len(seqs),
    )
    return LiveSet(
        rows=rows,
        vectors=vectors,
        watermark=watermark,
        next_template_counter=counter,
        vectors_in=base.index.ntotal + len(seqs),
        galleries=galleries,
    )


def build_snapshot(
    store: ObjectStore,
    shard: int,
    epoch: int,
    *,
    num_shards: int,
    dim: int,
    settings: GallerySettings,
    work_dir: str | Path,
    progress: Callable[[int], None] | None = None,
) -> ShardBuild:
    """Build shard `shard` of the new epoch `epoch` from the current snapshot and the log.

    Writes the shard's parts (not the manifest) and returns their manifest entry. `work_dir` holds the memory-mapped old and new
    rerank stores while building; they are removed afterwards. Needs no shard writer and does not
    disturb one: appends after the log listing are simply beyond the new watermark.
    """
    work = Path(tempfile.mkdtemp(prefix=f"build-shard-{shard}-", dir=work_dir))
    try:
        base = load_current_snapshot(store, shard, num_shards, dim, settings.index, rerank_dir=work)
        live = live_set(store, base, dim=dim)
        del base
        rerank_file = work / "rerank.faiss"
        index = build_index(
            live.vectors, live.rows.template_ids, settings.index, rerank_path=rerank_file, progress=progress
        )
        rows, watermark, counter, vectors_in = live.rows, live.watermark, live.next_template_counter, live.vectors_in
        galleries = live.galleries
        del live  # the float32 matrix is in the index or the rerank file now
        info = write_shard_snapshot(
            store,
            epoch,
            shard,
            index,
            rows,
            watermark=watermark,
            next_template_counter=counter,
            rerank_file=rerank_file if index.rerank is not None else None,
            galleries=galleries,
        )
        return ShardBuild(info=info, vectors_in=vectors_in)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compact(
    store: ObjectStore,
    *,
    num_shards: int,
    dim: int,
    settings: GallerySettings,
    work_dir: str | Path,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Build every shard of a new epoch, write its manifest, then make it current (in that order).

    Returns the new manifest; shards then `swap_to(manifest.epoch)`, and the log segments
    through each shard's watermark may be deleted (`log_segments.delete_segments_through`).
    Callers make sure two compactions never run at once.
    """
    epoch = next_epoch(store)
    infos = [
        build_snapshot(
            store, shard, epoch, num_shards=num_shards, dim=dim, settings=settings, work_dir=work_dir, progress=progress
        ).info
        for shard in range(num_shards)
    ]
    manifest = write_manifest(store, epoch, num_shards, dim, settings.index, infos)
    publish_current(store, epoch)
    return manifest
