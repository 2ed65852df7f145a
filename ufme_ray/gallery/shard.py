"""One gallery shard: snapshot index + exact delta + tombstones, fed by the shard's event log.

`Shard` is the plain object the shard actor wraps. Its state is a pure fold of the log: the
snapshot holds every event with seq <= its watermark, the delta and tombstones hold the events
after it, applied in seq order. So `Shard.open` (snapshot + replay) rebuilds exactly the state a
live shard had, and every acknowledged enrolment or delete survives a restart.

Galleries (`gallery.galleries`): subjects are keyed within their gallery; the snapshot's rows of
one gallery are one range and the delta is one per gallery, so a search of a small gallery costs
what that gallery holds, whatever its neighbours hold. Shard 0 also holds the registry of galleries.

Concurrency: any number of threads may search, enrol and delete at once. Appends are
group-committed by the log outside any shard lock; the resulting events are then applied in seq
order under a short write lock, and searches hold a read lock (FAISS releases the GIL). Erasing a
gallery excludes enrolments for the moment it is logged, so none can land after it unseen.
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
from ufme_ray.gallery.follower import LogFollower
from ufme_ray.gallery.events import DeleteEvent, EnrolEvent, EraseGalleryEvent, Event, GalleryEvent
from ufme_ray.gallery.galleries import (
    DEFAULT_GALLERY,
    GalleryRecord,
    ShardGalleries,
    NoSuchGalleryError,
    gallery_of,
    split_key,
)
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
# A gallery with at most this many snapshot rows on the shard is searched exactly over its own
# rows (decoded from the rerank store), not through the shared index, so its neighbours' size
# costs it nothing; above it, the shared index with the gallery's row range as a filter.
EXACT_GALLERY_ROWS = 16_384


def _gallery_ranges(rows) -> dict[str, tuple[int, int, int, int]]:
    """Per gallery: (first row, row after its last, first subject code, code after its last)."""
    ranges: dict[str, tuple[int, int, int, int]] = {}
    galleries = [gallery_of(subject) for subject in rows.subjects]
    first = 0
    for code in range(1, len(galleries) + 1):
        if code == len(galleries) or galleries[code] != galleries[first]:
            if galleries[first] in ranges:
                raise CorruptSnapshotError(f"snapshot rows of gallery {galleries[first]!r} are not one range")
            ranges[galleries[first]] = (int(rows.starts[first]), int(rows.starts[code]), first, code)
            first = code
    return ranges


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns per row of `scores`, best first: (scores, columns); missing: -inf, -1."""
    nq, n = scores.shape
    take = min(k, n)
    if take == 0:
        return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
    columns = np.where(np.isfinite(top_scores), top, -1)
    pad = ((0, 0), (0, k - take))
    return np.pad(top_scores, pad, constant_values=-np.inf), np.pad(columns, pad, constant_values=-1)


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
        # Enrolments hold it shared, a gallery's erasure alone (see `erase_gallery`).
        self._gallery_gate = RWLock()
        self._registry_lock = threading.Lock()
        self._galleries = ShardGalleries.from_json(base.galleries.to_json())
        self._install_base(base, deletes=[], erasures=[])
        self._deltas: dict[str, Delta] = {}
        self._applied_seq = base.watermark
        self._counter = base.next_template_counter
        replayed = self._catch_up()
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
        writer: bool = True,
    ) -> "Shard":
        """Restore shard `shard_id`: load the snapshot named by CURRENT, claim the log, replay it.

        The log is claimed (fencing any previous writer) before the replay, so the replay sees
        every event the previous writer acknowledged. With `writer=False` nothing is claimed: the
        shard follows the log (`follow`) until `take_writer`. Raises CorruptSnapshotError,
        CorruptSegmentError or CorruptLogError rather than start from incomplete state.
        """
        local = None
        if settings.index.rerank_store == "mmap":
            local = Path(rerank_dir or settings.index.rerank_dir or tempfile.mkdtemp(prefix=f"ufme-shard-{shard_id}-"))
        base = load_current_snapshot(store, shard_id, num_shards, dim, settings.index, rerank_dir=local)
        log = ObjectStoreEventLog.open(store, shard_id, settings.log) if writer else LogFollower(store, shard_id)
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

    def _install_base(self, base: ShardSnapshot, deletes: list[tuple[int, str]], erasures: list[tuple[int, str]]) -> None:
        """Make `base` the snapshot, with tombstones for the deletes and gallery erasures after its watermark."""
        self._base = base
        self._base_codes = {subject: code for code, subject in enumerate(base.rows.subjects)}
        self._ranges = _gallery_ranges(base.rows)
        self._tombstones: set[str] = set()
        self._alive: np.ndarray | None = None
        self._deletes = [(seq, subject) for seq, subject in deletes if seq > base.watermark]
        self._erasures = [(seq, gallery) for seq, gallery in erasures if seq > base.watermark]
        for _, subject in self._deletes:
            self._tombstone_base(subject)
        for _, gallery in self._erasures:
            self._tombstone_base_gallery(gallery)
        rows = base.rows
        keyed = np.fromiter(rows.requests, np.int64, len(rows.requests))
        for row, code in zip(keyed.tolist(), rows.subject_of_rows(keyed).tolist()):
            if rows.subjects[code] not in self._tombstones:
                self._requests.add(rows.requests[row], int(rows.template_ids[row]), base.watermark)

    def _tombstone_base_gallery(self, gallery_id: str) -> list[int]:
        """Tombstone every subject of the gallery in the snapshot; returns their template ids."""
        found = self._ranges.get(gallery_id)
        if found is None:
            return []
        start, stop, first_code, last_code = found
        if self._alive is None:
            self._alive = np.packbits(np.ones(self._base.index.ntotal, bool), bitorder="little")
        bits = np.unpackbits(self._alive, count=self._base.index.ntotal, bitorder="little")
        erased = self._base.rows.template_ids[start:stop][bits[start:stop].astype(bool)].tolist()
        bits[start:stop] = 0
        self._alive = np.packbits(bits, bitorder="little")
        self._tombstones.update(self._base.rows.subjects[first_code:last_code])
        return erased

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
            self._deltas.setdefault(gallery_of(event.subject_id), Delta(self.dim)).add(seq, event)
            self._counter = max(self._counter, template_counter(event.template_id) + 1)
            if event.request is not None:
                self._requests.add(event.request, event.template_id, seq)
            return [event.template_id]
        if isinstance(event, GalleryEvent):
            self._galleries.registry.apply(seq, event)
            return []
        if isinstance(event, EraseGalleryEvent):
            delta = self._deltas.pop(event.gallery_id, None)  # its vectors go with it
            erased = self._tombstone_base_gallery(event.gallery_id) + ([] if delta is None else delta.erase_all())
            self._galleries.erase(event.gallery_id, event.generation)
            self._erasures.append((seq, event.gallery_id))
        else:
            delta = self._deltas.get(gallery_of(event.subject_id))
            erased = self._tombstone_base(event.subject_id) + ([] if delta is None else delta.erase(event.subject_id))
            self._deletes.append((seq, event.subject_id))
        self._requests.forget(erased)
        return erased

    def _catch_up(self) -> int:
        """Apply every event in the log after the last one applied; returns how many.

        The caller excludes appends (construction, a follower, or a writer not yet appending).
        """
        caught_up = 0
        for seq, event in self._log.read(self._applied_seq):
            if seq != self._applied_seq + 1:
                raise CorruptLogError(f"shard {self.shard_id}: log resumes at seq {seq}, expected {self._applied_seq + 1}")
            with self._rw.write():
                self._apply(seq, event)
            self._applied_seq = seq
            caught_up += 1
        return caught_up

    @property
    def is_writer(self) -> bool:
        """Whether this shard holds the log's writer claim (else it follows the log)."""
        return not isinstance(self._log, LogFollower)

    def follow(self) -> int:
        """A follower's tail: apply what the writer has appended since; returns how many events.

        Raises CorruptLogError if the events it misses were deleted meanwhile (restore afresh).
        """
        with self._apply_cond:
            if self.is_writer:
                return 0
            caught_up = self._catch_up()
            self._apply_cond.notify_all()
        return caught_up

    def take_writer(self) -> int:
        """Claim the log (fencing whoever wrote it), then apply what the claim's listing holds
        beyond this shard's state; returns how many events that was. A no-op for a writer.

        Claim first, list second: everything the previous writer acknowledged is applied before
        the first append of this one, so nothing acknowledged elsewhere is missed.
        """
        if self._store is None:
            raise ValueError("take_writer needs the shard to be opened on an object store")
        with self._apply_cond:
            if self.is_writer:
                return 0
            self._log = ObjectStoreEventLog.open(self._store, self.shard_id, self._settings.log)
            caught_up = self._catch_up()
            self._apply_cond.notify_all()
        logger.info("shard %d took the writer claim (epoch %d), %d events caught up", self.shard_id, self._log.writer_epoch, caught_up)
        return caught_up

    def hand_over(self) -> None:
        """Give up writing after a newer writer fenced this one: follow the log from now on.

        What this writer appended but was fenced for is not in memory (`_commit` applies only
        acknowledged appends); if it did land before the newer writer's start, `follow` applies it.
        """
        if self._store is None:
            raise ValueError("hand_over needs the shard to be opened on an object store")
        with self._apply_cond:
            if not self.is_writer:
                return
            fenced, self._log = self._log, LogFollower(self._store, self.shard_id)
        fenced.close()
        logger.warning("shard %d handed the log over to a newer writer; following it", self.shard_id)

    def superseded(self) -> bool:
        """Whether a newer writer has claimed this writer's log (one listing of the claims)."""
        if not isinstance(self._log, ObjectStoreEventLog):
            return False
        return self._log.superseded()

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
        quality, RequestKeyReusedError for a key acknowledged for another request,
        NoSuchGalleryError for a gallery generation this shard has erased, and the log's errors
        (FencedError, StorageError, …) if the append fails.
        """
        if not items:
            return []
        with self._gallery_gate.read():
            for item in items:
                gallery = gallery_of(item.subject_id)
                if self._galleries.is_erased(gallery, item.generation):
                    raise NoSuchGalleryError(gallery)
            return self._enrol(items)

    def _enrol(self, items: Sequence[Enrolment]) -> list[tuple[int, int]]:
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

    def erase_gallery(self, gallery_id: str, generation: int) -> list[int]:
        """Erase every template of the gallery's incarnation `generation` (or an earlier one) on
        this shard and refuse enrolments into it from now on; returns the erased template ids.

        Logged even when the shard holds none of its templates: the refusal of later enrolments
        must survive a restart. Idempotent: a generation erased before returns []. Enrolments
        wait while it is logged, so each lands before it (and is erased) or is refused.
        """
        with self._gallery_gate.write():
            if self._galleries.is_erased(gallery_id, generation):
                return []
            [(_, erased)] = self._commit([EraseGalleryEvent(gallery_id, generation, time.time())])
        return sorted(erased)

    def change_gallery(self, event: GalleryEvent, *, max_galleries: int) -> GalleryRecord | None:
        """Log a change to the registry of galleries (shard 0 holds it); returns the gallery's
        record after it (None once purged). Raises the registry's refusals (`galleries`)."""
        if self.shard_id != 0:
            raise WrongShardError(f"the registry of galleries is on shard 0, not {self.shard_id}")
        with self._registry_lock:  # check and log as one step: two creates of one id cannot both pass
            with self._rw.read():
                self._galleries.registry.check(event, max_galleries=max_galleries)
            self._commit([event])
        with self._rw.read():
            return self._galleries.registry.get(event.gallery_id)

    def galleries(self) -> list[GalleryRecord]:
        """The registry (meaningful on shard 0), `default` included."""
        with self._rw.read():
            return self._galleries.registry.records()

    def gallery(self, gallery_id: str) -> GalleryRecord | None:
        with self._rw.read():
            return self._galleries.registry.get(gallery_id)

    def gallery_counts(self, gallery_id: str) -> dict:
        """{subjects, templates} of the gallery held by this shard."""
        with self._rw.read():
            subjects: set[str] = set()
            templates = 0
            found = self._ranges.get(gallery_id)
            if found is not None:
                rows = self._base.rows
                for code in range(found[2], found[3]):
                    subject = rows.subjects[code]
                    if subject not in self._tombstones:
                        subjects.add(subject)
                        templates += int(rows.starts[code + 1] - rows.starts[code])
            delta = self._deltas.get(gallery_id)
            if delta is not None:
                subjects.update(delta.by_subject)
                templates += delta.live
        return {"subjects": len(subjects), "templates": templates}

    def list_subjects(self, gallery_id: str, limit: int) -> list[str]:
        """The first `limit` subject ids of the gallery on this shard, in order."""
        with self._rw.read():
            keys: set[str] = set()
            found = self._ranges.get(gallery_id)
            if found is not None:
                keys.update(s for s in self._base.rows.subjects[found[2] : found[3]] if s not in self._tombstones)
            delta = self._deltas.get(gallery_id)
            if delta is not None:
                keys.update(delta.by_subject)
        return sorted(split_key(key)[1] for key in keys)[:limit]

    def search(self, queries: np.ndarray, k: int, galleries: Sequence[str] = (DEFAULT_GALLERY,)) -> list[list[SearchHit]]:
        """Top-k templates per query by cosine similarity within `galleries`, best first; never a
        deleted subject, never another gallery's template. Hits name subject keys.

        `queries` is (n, d) (normalised here). Fewer than k hits when the galleries hold fewer.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._prepared(queries)
        if len(queries) == 0:
            return []
        with self._rw.read():
            base = self._base
            scores, sources = [], []  # per part: (nq, k) scores, and how to name its columns
            for gallery in dict.fromkeys(galleries):
                found = self._ranges.get(gallery)
                if found is not None:
                    part_scores, rows = self._search_base(queries, k, found[0], found[1])
                    scores.append(part_scores)
                    sources.append((None, rows))
                delta = self._deltas.get(gallery)
                if delta is not None:
                    part_scores, rows = delta.search(queries, k)
                    scores.append(part_scores)
                    sources.append((delta, rows))
            if not scores:
                return [[] for _ in range(len(queries))]
            top_scores, columns = _top(np.concatenate(scores, axis=1), k)
            # Every base hit's subject in one searchsorted, not one per hit.
            rows_of = np.stack([rows for _, rows in sources], axis=1)  # (nq, parts, k)
            picked = np.take_along_axis(rows_of.reshape(len(queries), -1), np.maximum(columns, 0), axis=1)
            base_codes = base.rows.subject_of_rows(np.maximum(picked, 0))
            results = []
            for q in range(len(queries)):
                hits = []
                for i, (score, column) in enumerate(zip(top_scores[q].tolist(), columns[q].tolist())):
                    if column < 0:
                        break
                    delta = sources[column // k][0]
                    row = int(picked[q, i])
                    if delta is None:
                        hits.append(SearchHit(int(base.index.ids[row]), base.rows.subjects[int(base_codes[q, i])], score))
                    else:
                        hits.append(SearchHit(int(delta.template_ids[row]), delta.subjects[row], score))
                results.append(hits)
        return results

    def _search_base(self, queries: np.ndarray, k: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k live snapshot rows in start..stop-1 per query (caller holds the read lock)."""
        index = self._base.index
        if stop - start > EXACT_GALLERY_ROWS:
            return index.search(queries, k, alive=self._alive, within=(start, stop))
        scores = queries @ index.vectors(start, stop).T
        if self._alive is not None:
            first_byte = start >> 3
            bits = np.unpackbits(self._alive[first_byte : (stop + 7) >> 3], bitorder="little")
            live = bits[start - (first_byte << 3) : stop - (first_byte << 3)].astype(bool)
            scores[:, ~live] = -np.inf
        top_scores, columns = _top(scores, k)
        return top_scores, np.where(columns >= 0, columns + start, -1)

    def search_subjects(
        self, queries: np.ndarray, top_k: int, galleries: Sequence[str] = (DEFAULT_GALLERY,)
    ) -> list[list[SearchHit]]:
        """Per query, the top_k subjects of `galleries` by their best template (one hit each), best first.

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
            for q, hits in zip(pending, self.search(queries[pending], k, galleries)):
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
            delta = self._deltas.get(gallery_of(subject_id))
            if delta is not None:
                rows = delta.by_subject.get(subject_id, [])
                ids += delta.template_ids[rows].tolist()
                parts.append(delta.vectors[rows])
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
            delta = self._deltas.get(gallery_of(subject_id))
            for row in [] if delta is None else delta.by_subject.get(subject_id, []):
                found.append(
                    TemplateInfo(int(delta.template_ids[row]), float(delta.quality[row]), float(delta.enrolled_at[row]))
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
            delta_rows = sum(delta.live for delta in self._deltas.values())
            resident["delta"] = sum(delta.vectors.nbytes for delta in self._deltas.values())
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
                delta_rows=delta_rows,
                live_templates=live_base + delta_rows,
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
                self._install_base(fresh, deletes=self._deletes, erasures=self._erasures)
                kept = {gallery: delta.after(fresh.watermark) for gallery, delta in self._deltas.items()}
                self._deltas = {gallery: delta for gallery, delta in kept.items() if delta.n}
                self._counter = max(self._counter, fresh.next_template_counter)
        if old.rerank_path is not None:
            old.rerank_path.unlink(missing_ok=True)  # mapped pages stay valid until the old index is freed
        logger.info("shard %d swapped to epoch %d (watermark %d)", self.shard_id, epoch, fresh.watermark)

    def close(self) -> None:
        """Stop accepting writes (pending appends finish first)."""
        self._log.close()
