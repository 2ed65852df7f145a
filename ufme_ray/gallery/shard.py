"""One gallery shard: snapshot index + exact delta + tombstones, fed by the shard's event log.

`Shard` is the plain object the shard actor wraps. Its state is a pure fold of the log: the
snapshot holds every event with seq <= its watermark, the delta and tombstones hold the events
after it, applied in seq order. So `Shard.open` (snapshot + replay) rebuilds exactly the state a
live shard had, and every acknowledged enrolment or delete survives a restart.

Concurrency: any number of threads may search, enrol and delete at once. Appends are
group-committed by the log outside any shard lock; the resulting events are then applied in seq
order under a short write lock, and searches hold a read lock (FAISS releases the GIL).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ufme_ray.config import GallerySettings
from ufme_ray.gallery.delta import Delta
from ufme_ray.gallery.epochs import read_manifest
from ufme_ray.gallery.events import DeleteEvent, EnrolEvent, Event
from ufme_ray.gallery.index import l2_normalise
from ufme_ray.gallery.locks import RWLock
from ufme_ray.gallery.log import CorruptLogError, EventLog
from ufme_ray.gallery.manifest import CorruptSnapshotError
from ufme_ray.gallery.object_log import ObjectStoreEventLog
from ufme_ray.gallery.requests import RequestLedger, repeats
from ufme_ray.gallery.routing import MAX_SHARDS, make_template_id, shard_for, template_counter
from ufme_ray.gallery.shard_types import Enrolment, SearchHit, ShardFailedError, ShardStats, TemplateInfo, WrongShardError
from ufme_ray.gallery.snapshot import ShardSnapshot, load_current_snapshot, load_shard_snapshot
from ufme_ray.gallery.storage import ObjectStore

logger = logging.getLogger(__name__)

# search_subjects starts with this many templates per subject asked for, and doubles while short.
SUBJECT_SEARCH_WIDTH = 4


def _best_per_subject(hits: list[SearchHit]) -> list[SearchHit]:
    """The first (best) hit of every subject, in order."""
    seen: set[str] = set()
    return [hit for hit in hits if not (hit.subject_id in seen or seen.add(hit.subject_id))]


class Shard:
    """A shard of the gallery: search, enrol, delete, and swap to a newer snapshot.

    Invariants:
    - state == fold of the shard's events in seq order (snapshot through its watermark, then the
      delta and tombstones for the events after it);
    - `enrol` and `delete` return only once their event is durable and applied, so a search that
      starts after they return sees their effect;
    - a search never returns a template of a subject deleted before the search started.
    """

    def __init__(
        self,
        *,
        shard_id: int,
        num_shards: int,
        dim: int,
        settings: GallerySettings,
        log: EventLog,
        base: ShardSnapshot,
        store: ObjectStore | None = None,
        rerank_dir: Path | None = None,
    ) -> None:
        if not 0 <= shard_id < num_shards or num_shards > MAX_SHARDS:
            raise ValueError(f"shard {shard_id} is not in 0..{num_shards - 1} (at most {MAX_SHARDS} shards)")
        if base.index.params.dim != dim:
            raise ValueError(f"snapshot dim {base.index.params.dim} != configured dim {dim}")
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.dim = dim
        self._settings = settings
        self._log = log
        self._store = store
        self._rerank_dir = rerank_dir
        self._rw = RWLock()
        self._apply_cond = threading.Condition()
        self._id_lock = threading.Lock()
        self._failure: BaseException | None = None
        self._requests = RequestLedger()
        self._install_base(base, deletes=[])
        self._delta = Delta(dim)
        self._applied_seq = base.watermark
        self._counter = base.next_template_counter
        replayed = 0
        for seq, event in log.read(base.watermark):
            if seq != self._applied_seq + 1:
                raise CorruptLogError(f"shard {shard_id}: log resumes at seq {seq}, expected {self._applied_seq + 1}")
            self._apply(seq, event)
            self._applied_seq = seq
            replayed += 1
        logger.info(
            "shard %d restored: snapshot epoch %d through seq %d, %d events replayed",
            shard_id, base.epoch, base.watermark, replayed,
        )

    @classmethod
    def open(
        cls,
        store: ObjectStore,
        shard_id: int,
        num_shards: int,
        dim: int,
        settings: GallerySettings,
        *,
        rerank_dir: str | Path | None = None,
    ) -> "Shard":
        """Restore shard `shard_id`: load the snapshot named by CURRENT, claim the log, replay it.

        The log is claimed (fencing any previous writer) before the replay, so the replay sees
        every event the previous writer acknowledged. Raises CorruptSnapshotError,
        CorruptSegmentError or CorruptLogError rather than start from incomplete state.
        """
        local = None
        if settings.index.rerank_store == "mmap":
            local = Path(rerank_dir or settings.index.rerank_dir or tempfile.mkdtemp(prefix=f"ufme-shard-{shard_id}-"))
        base = load_current_snapshot(store, shard_id, num_shards, dim, settings.index, rerank_dir=local)
        log = ObjectStoreEventLog.open(store, shard_id, settings.log)
        return cls(
            shard_id=shard_id,
            num_shards=num_shards,
            dim=dim,
            settings=settings,
            log=log,
            base=base,
            store=store,
            rerank_dir=local,
        )

    def _install_base(self, base: ShardSnapshot, deletes: list[tuple[int, str]]) -> None:
        """Make `base` the snapshot, with tombstones for the deletes after its watermark."""
        self._base = base
        self._base_codes = {subject: code for code, subject in enumerate(base.rows.subjects)}
        self._tombstones: set[str] = set()
        self._alive: np.ndarray | None = None
        self._deletes = [(seq, subject) for seq, subject in deletes if seq > base.watermark]
        for _, subject in self._deletes:
            self._tombstone_base(subject)
        rows = base.rows
        keyed = np.fromiter(rows.requests, np.int64, len(rows.requests))
        for row, code in zip(keyed.tolist(), rows.subject_of_rows(keyed).tolist()):
            if rows.subjects[code] not in self._tombstones:
                self._requests.add(rows.requests[row], int(rows.template_ids[row]), base.watermark)

    def _tombstone_base(self, subject_id: str) -> list[int]:
        code = self._base_codes.get(subject_id)
        if code is None or subject_id in self._tombstones:
            return []
        start, stop = int(self._base.rows.starts[code]), int(self._base.rows.starts[code + 1])
        if self._alive is None:
            self._alive = np.packbits(np.ones(self._base.index.ntotal, bool), bitorder="little")
        rows = np.arange(start, stop)
        np.bitwise_and.at(self._alive, rows >> 3, ~(np.left_shift(1, rows & 7)).astype(np.uint8))
        self._tombstones.add(subject_id)
        return self._base.rows.template_ids[start:stop].tolist()

    def _apply(self, seq: int, event: Event) -> list[int]:
        """Fold one event into memory (caller holds the write lock, events come in seq order)."""
        if isinstance(event, EnrolEvent):
            self._delta.add(seq, event)
            self._counter = max(self._counter, template_counter(event.template_id) + 1)
            if event.request is not None:
                self._requests.add(event.request, event.template_id, seq)
            return [event.template_id]
        erased = self._tombstone_base(event.subject_id) + self._delta.erase(event.subject_id)
        self._requests.forget(erased)
        self._deletes.append((seq, event.subject_id))
        return erased

    def _commit(self, events: list[Event]) -> list[tuple[int, list[int]]]:
        """Append durably, then apply in seq order; returns (seq, affected template ids) per event."""
        seqs = self._log.append(events)
        with self._apply_cond:
            while self._failure is None and self._applied_seq != seqs[0] - 1:
                self._apply_cond.wait()
            if self._failure is not None:
                raise ShardFailedError(f"shard {self.shard_id} failed earlier; reopen it") from self._failure
            try:
                with self._rw.write():
                    results = [(seq, self._apply(seq, event)) for seq, event in zip(seqs, events)]
            except BaseException as exc:
                self._failure = exc
                logger.exception("shard %d: applying seq %d..%d failed", self.shard_id, seqs[0], seqs[-1])
                raise ShardFailedError(f"shard {self.shard_id}: applying durable events failed; reopen it") from exc
            finally:
                self._apply_cond.notify_all()
            self._applied_seq = seqs[-1]
            self._apply_cond.notify_all()
        return results

    def enrol(self, items: Sequence[Enrolment]) -> list[tuple[int, int]]:
        """Enrol templates as one durable batch; returns (template_id, seq) per item, in order.

        Blocks until the batch is durable (group-committed with concurrent calls). All-or-nothing.
        An item whose request key was acknowledged before (or repeats one earlier in the batch)
        adds nothing and answers that first (template_id, seq).
        Raises WrongShardError for a subject of another shard, ValueError for a bad vector or
        quality, RequestKeyReusedError for a key acknowledged for another request, and the log's
        errors (FencedError, StorageError, …) if the append fails.
        """
        if not items:
            return []
        for item in items:
            owner = shard_for(item.subject_id, self.num_shards)
            if owner != self.shard_id:
                raise WrongShardError(f"subject {item.subject_id!r} belongs to shard {owner}, not {self.shard_id}")
        vectors = np.stack([np.asarray(item.vector, dtype=np.float32).reshape(-1) for item in items])
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dim {vectors.shape[1]}, the gallery has {self.dim}")
        vectors = l2_normalise(vectors)
        requests = [item.request for item in items]
        with self._requests.claim(requests) as known:
            earlier = repeats(requests)
            fresh = [i for i in range(len(items)) if known[i] is None and earlier[i] is None]
            with self._id_lock:
                first = self._counter
                self._counter += len(fresh)
            now = time.time()
            events: list[Event] = [
                EnrolEvent(
                    template_id=make_template_id(self.shard_id, first + n),
                    subject_id=items[i].subject_id,
                    vector=vectors[i],
                    quality=items[i].quality,
                    timestamp=now,
                    request=items[i].request,
                )
                for n, i in enumerate(fresh)
            ]
            written = dict(zip(fresh, ((ids[0], seq) for seq, ids in self._commit(events)))) if events else {}
        answers: list[tuple[int, int]] = []
        for i in range(len(items)):
            answer = known[i] or written.get(i) or answers[earlier[i]]
            answers.append((int(answer[0]), int(answer[1])))
        return answers

    def delete(self, subject_id: str) -> list[int]:
        """Erase every template of `subject_id` enrolled before this call; returns their ids.

        A subject without live templates returns [] and logs nothing, so a refused delete (404)
        leaves the log as it was: a hostile client cannot grow it with deletes of made-up ids. An
        enrolment still in flight (logged, not yet applied) was not acknowledged before this call,
        so it may land after it, like one that starts after it. Blocks until durable.
        """
        owner = shard_for(subject_id, self.num_shards)
        if owner != self.shard_id:
            raise WrongShardError(f"subject {subject_id!r} belongs to shard {owner}, not {self.shard_id}")
        if not self.templates(subject_id):
            return []
        [(_, erased)] = self._commit([DeleteEvent(subject_id=subject_id, timestamp=time.time())])
        return sorted(erased)

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        """Top-k templates per query by cosine similarity, best first; never a deleted subject.

        `queries` is (n, d) (normalised here). Fewer than k hits when the shard holds fewer.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._prepared(queries)
        if len(queries) == 0:
            return []
        with self._rw.read():
            base = self._base
            base_scores, base_rows = base.index.search(queries, k, alive=self._alive)
            delta_scores, delta_rows = self._delta.search(queries, k)
            base_subjects = base.rows.subject_of_rows(np.maximum(base_rows, 0))
            scores = np.concatenate([base_scores, delta_scores], axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            results = []
            for q in range(len(queries)):
                hits = []
                for column in order[q]:
                    score = float(scores[q, column])
                    if score == -np.inf:
                        break
                    if column < k:
                        row = int(base_rows[q, column])
                        hit = SearchHit(
                            int(base.index.ids[row]), base.rows.subjects[int(base_subjects[q, column])], score
                        )
                    else:
                        row = int(delta_rows[q, column - k])
                        hit = SearchHit(int(self._delta.template_ids[row]), self._delta.subjects[row], score)
                    hits.append(hit)
                results.append(hits)
        return results

    def search_subjects(self, queries: np.ndarray, top_k: int) -> list[list[SearchHit]]:
        """Per query, the top_k subjects by their best template (one hit each), best first.

        The template search widens until it holds top_k distinct subjects or the shard has no more
        templates, so a subject enrolled with many close photos cannot push others out.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        queries = self._prepared(queries)
        found: list[list[SearchHit]] = [[] for _ in range(len(queries))]
        pending, k = list(range(len(queries))), top_k * SUBJECT_SEARCH_WIDTH
        while pending:
            still = []
            for q, hits in zip(pending, self.search(queries[pending], k)):
                found[q] = _best_per_subject(hits)[:top_k]
                if len(found[q]) < top_k and len(hits) == k:
                    still.append(q)
            pending, k = still, k * 2
        return found

    def _prepared(self, queries: np.ndarray) -> np.ndarray:
        """Queries as L2-normalised float32 (n, dim); ValueError for any other shape."""
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {queries.shape}")
        return l2_normalise(queries) if len(queries) else queries

    def subject_scores(self, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
        """1:1 verification: per query, (template_id, cosine) for every live template of the subject.

        Ordered by template id; an unknown or deleted subject gives an empty list per query.
        """
        queries = self._prepared(queries)
        if len(queries) == 0:
            return []
        with self._rw.read():
            ids: list[int] = []
            parts: list[np.ndarray] = []
            code = self._base_codes.get(subject_id)
            if code is not None and subject_id not in self._tombstones:
                start, stop = int(self._base.rows.starts[code]), int(self._base.rows.starts[code + 1])
                ids += self._base.rows.template_ids[start:stop].tolist()
                parts.append(self._base.index.vectors(start, stop))
            rows = self._delta.by_subject.get(subject_id, [])
            ids += self._delta.template_ids[rows].tolist()
            parts.append(self._delta.vectors[rows])
        if not ids:
            return [[] for _ in range(len(queries))]
        order = np.argsort(ids)
        scores = queries @ np.concatenate(parts)[order].T
        ordered = [ids[i] for i in order]
        return [list(zip(ordered, row.tolist())) for row in scores]

    def templates(self, subject_id: str) -> list[TemplateInfo]:
        """The live templates of `subject_id`, by template id; [] for an unknown subject."""
        with self._rw.read():
            found = []
            code = self._base_codes.get(subject_id)
            if code is not None and subject_id not in self._tombstones:
                rows = self._base.rows
                for row in range(int(rows.starts[code]), int(rows.starts[code + 1])):
                    info = TemplateInfo(
                        int(rows.template_ids[row]), float(rows.quality[row]), float(rows.enrolled_at[row])
                    )
                    found.append(info)
            for row in self._delta.by_subject.get(subject_id, []):
                found.append(
                    TemplateInfo(
                        int(self._delta.template_ids[row]),
                        float(self._delta.quality[row]),
                        float(self._delta.enrolled_at[row]),
                    )
                )
        return sorted(found)

    def stats(self) -> ShardStats:
        with self._rw.read():
            base = self._base
            tombstoned_rows = sum(
                int(base.rows.starts[self._base_codes[s] + 1] - base.rows.starts[self._base_codes[s]])
                for s in self._tombstones
            )
            live_base = base.index.ntotal - tombstoned_rows
            resident = base.index.resident_bytes()
            resident["delta"] = self._delta.vectors.nbytes
            return ShardStats(
                shard=self.shard_id,
                num_shards=self.num_shards,
                snapshot_epoch=base.epoch,
                watermark=base.watermark,
                applied_seq=self._applied_seq,
                writer_epoch=self._log.writer_epoch,
                index_kind=base.index.params.kind,
                snapshot_rows=base.index.ntotal,
                live_snapshot_rows=live_base,
                delta_rows=self._delta.live,
                live_templates=live_base + self._delta.live,
                tombstoned_subjects=len(self._tombstones),
                resident_bytes=resident,
            )

    def swap_to(self, epoch: int, *, timeout_s: float = 60.0) -> None:
        """Load snapshot `epoch` beside the live one, then swap atomically.

        Searches keep running on the old snapshot during the load and never fail. After the swap
        the delta keeps only events newer than the new watermark, and deletes newer than it
        tombstone the new snapshot. Waits (at most `timeout_s`) until every event up to the new
        watermark is applied. Raises ValueError for an epoch older than the current one or for
        another gallery shape, TimeoutError, CorruptSnapshotError.
        """
        if self._store is None:
            raise ValueError("swap_to needs the shard to be opened on an object store")
        manifest = read_manifest(self._store, epoch)
        manifest.check_shape(self.num_shards, self.dim)
        if epoch <= self._base.epoch:
            raise ValueError(f"shard {self.shard_id}: epoch {epoch} is not newer than {self._base.epoch}")
        fresh = load_shard_snapshot(
            self._store, epoch, self.shard_id, self._settings.index, manifest=manifest, rerank_dir=self._rerank_dir
        )
        if fresh.watermark > self._log.last_seq:
            raise CorruptSnapshotError(
                f"shard {self.shard_id}: snapshot {epoch} watermark {fresh.watermark} "
                f"is beyond the log ({self._log.last_seq})"
            )
        deadline = time.monotonic() + timeout_s
        with self._apply_cond:
            while self._applied_seq < fresh.watermark:
                remaining = deadline - time.monotonic()
                if self._failure is not None:
                    raise ShardFailedError(f"shard {self.shard_id} failed earlier; reopen it") from self._failure
                if remaining <= 0:
                    raise TimeoutError(f"shard {self.shard_id}: events up to {fresh.watermark} not applied in time")
                self._apply_cond.wait(remaining)
            with self._rw.write():
                old = self._base
                self._install_base(fresh, deletes=self._deletes)
                self._delta = self._delta.after(fresh.watermark)
                self._counter = max(self._counter, fresh.next_template_counter)
        if old.rerank_path is not None:
            old.rerank_path.unlink(missing_ok=True)  # mapped pages stay valid until the old index is freed
        logger.info("shard %d swapped to epoch %d (watermark %d)", self.shard_id, epoch, fresh.watermark)

    def close(self) -> None:
        """Stop accepting writes (pending appends finish first)."""
        self._log.close()
