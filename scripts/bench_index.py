"""Benchmark the shard index (`ufme_ray.gallery.index`) against the same FAISS index used directly.

Data: synthetic face-like embeddings (`proving.synthetic`): identities with 1-7 samples
(4 on average) whose two samples have a mean cosine of --intra-cos (0.7 by default, like a good
face recogniser's genuine pairs). Queries are fresh samples of enrolled identities.

For each N x d the script reports build time, resident bytes per vector (FAISS codes + ids, the
rest of the index, our id map, and the rerank store separately), recall@1 and recall@10 against
exact search, and QPS for single queries and for batches of 32, ours beside the limit: the same
FAISS index type without our wrapper (IndexFlatIP, or IndexIVFPQ refined by an fp16
IndexScalarQuantizer through IndexRefine, with the same nprobe and candidate count).

    python scripts/bench_index.py --sizes 100000 1000000 --dims 128 512 --out bench-results/bench_index.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.synthetic import FaceLikeGallery
from ufme_ray.config import IndexSettings
from ufme_ray.gallery.index import BuiltIndex, build_index, choose_params, nprobe_for

K = 10
BATCH = 32
CHUNK = 100_000


def exact_top(gallery: np.ndarray, probes: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatIP(gallery.shape[1])
    for start in tqdm(range(0, len(gallery), CHUNK), desc="exact ground truth", leave=False):
        index.add(gallery[start : start + CHUNK])
    return index.search(probes, k)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    at1 = float(np.mean(found[:, 0] == truth[:, 0]))
    at10 = float(np.mean([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth)]))
    return at1, at10


def paired_qps(ours, limit, probes: np.ndarray, batch: int, limit_count: int) -> tuple[float, float]:
    """Queries per second of `ours` and `limit` over the first `limit_count` probes, `batch` at a time.

    The two are timed on the same batch one right after the other, in alternating order, so a
    change in background load while measuring hits both alike.
    """
    probes = probes[:limit_count]
    spent = {"ours": 0.0, "limit": 0.0}
    for number, i in enumerate(range(0, len(probes), batch)):
        chunk = probes[i : i + batch]
        order = (("ours", ours), ("limit", limit)) if number % 2 == 0 else (("limit", limit), ("ours", ours))
        for name, search in order:
            start = time.perf_counter()
            search(chunk)
            spent[name] += time.perf_counter() - start
    return len(probes) / spent["ours"], len(probes) / spent["limit"]


def baseline_index(ours: BuiltIndex, gallery: np.ndarray, settings: IndexSettings, train_sample: np.ndarray):
    """The same FAISS index type built directly: returns (index, build seconds)."""
    dim = gallery.shape[1]
    start = time.perf_counter()
    if ours.params.kind == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(gallery)
        return index, time.perf_counter() - start
    ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, ours.params.nlist, ours.params.pq_bytes, 8)
    ivf.by_residual = False
    ivf.train(train_sample)
    for i in range(0, len(gallery), CHUNK):
        ivf.add(gallery[i : i + CHUNK])
    refine = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
    refine.add(gallery)
    index = faiss.IndexRefine(ivf, refine)
    index.own_fields = True  # the refine wrapper frees both parts
    ivf.this.disown()
    refine.this.disown()
    return index, time.perf_counter() - start


def _limit_params(settings: IndexSettings, nprobe: int):
    ivf = faiss.SearchParametersIVF(nprobe=nprobe)
    params = faiss.IndexRefineSearchParameters(k_factor=max(settings.rerank_candidates, K) / K, base_index_params=ivf)
    params.keep_alive = ivf  # SWIG does not keep the nested parameters alive
    return params


def run(n: int, dim: int, args: argparse.Namespace) -> list[dict]:
    data = FaceLikeGallery(n, dim, intra_cos=args.intra_cos, seed=n + dim)
    gallery, (_, probes) = data.vectors(), data.probes(args.queries)
    truth = exact_top(gallery, probes, K)
    settings = IndexSettings(rerank_candidates=args.rerank_candidates)
    params = choose_params(n, dim, settings)
    with tqdm(total=n, desc=f"build {params.kind} {n}x{dim}", leave=False) as bar:
        start = time.perf_counter()
        ours = build_index(gallery, np.arange(n, dtype=np.int64), settings, progress=bar.update)
        build_s = time.perf_counter() - start
    if params.kind == "ivfpq":
        # The training sample build_index draws, so both indexes train on the same vectors.
        picked = np.sort(np.random.default_rng(0).choice(n, size=params.train_size, replace=False))
        sample = np.ascontiguousarray(gallery[picked])
    else:
        sample = gallery
    limit, limit_build_s = baseline_index(ours, gallery, settings, sample)
    del sample
    sizes = ours.resident_bytes()
    rows = []
    for requested in args.nprobe if params.kind == "ivfpq" else [0]:
        tuned = settings.model_copy(update={"nprobe": requested or None})
        nprobe = nprobe_for(params.nlist, tuned) if params.kind == "ivfpq" else 0
        wrapped = BuiltIndex(ours.params, ours.index, ours.ids, ours.rerank, tuned)
        limit_params = _limit_params(tuned, nprobe) if params.kind == "ivfpq" else None

        def ours_search(q: np.ndarray) -> np.ndarray:
            return wrapped.search(q, K)[1]

        def limit_search(q: np.ndarray) -> np.ndarray:
            return limit.search(q, K, params=limit_params)[1]

        found = np.concatenate([ours_search(probes[i : i + BATCH]) for i in range(0, len(probes), BATCH)])
        found_limit = np.concatenate([limit_search(probes[i : i + BATCH]) for i in range(0, len(probes), BATCH)])
        single, single_limit, batched, batched_limit = 0.0, 0.0, 0.0, 0.0
        for _ in range(args.repeats):  # best of a few rounds for each
            ours_qps, limit_qps = paired_qps(ours_search, limit_search, probes, 1, args.single_queries)
            single, single_limit = max(single, ours_qps), max(single_limit, limit_qps)
            ours_qps, limit_qps = paired_qps(ours_search, limit_search, probes, BATCH, len(probes))
            batched, batched_limit = max(batched, ours_qps), max(batched_limit, limit_qps)
        r1, r10 = recall(found, truth)
        l1, l10 = recall(found_limit, truth)
        rows.append(
            {
                "n": n,
                "dim": dim,
                "kind": params.kind,
                "nlist": params.nlist,
                "pq_bytes": params.pq_bytes,
                "train_size": params.train_size,
                "nprobe": nprobe,
                "rerank_candidates": args.rerank_candidates if params.kind == "ivfpq" else 0,
                "build_s": round(build_s, 2),
                "limit_build_s": round(limit_build_s, 2),
                "bytes_per_vector": {key: round(value / n, 2) for key, value in sizes.items()},
                "recall_at_1": r1,
                "recall_at_10": r10,
                "limit_recall_at_1": l1,
                "limit_recall_at_10": l10,
                "qps_single": round(single, 1),
                "limit_qps_single": round(single_limit, 1),
                "qps_batch32": round(batched, 1),
                "limit_qps_batch32": round(batched_limit, 1),
                "overhead_single": round(1 - single / single_limit, 3),
                "overhead_batch32": round(1 - batched / batched_limit, 3),
            }
        )
        tqdm.write(_line(rows[-1]))
    return rows


_HEADER = (
    f"{'N':>8} {'d':>4} {'kind':>6} {'nlist':>5} {'nprobe':>6} {'build s':>13} {'B/vec idx+ids':>13} "
    f"{'other':>6} {'idmap':>5} {'rerank':>6} {'R@1':>13} {'R@10':>13} {'QPS 1':>15} {'QPS 32':>15} {'ovh 1/32':>11}"
)


def _line(row: dict) -> str:
    b = row["bytes_per_vector"]
    return (
        f"{row['n']:>8} {row['dim']:>4} {row['kind']:>6} {row['nlist']:>5} {row['nprobe']:>6} "
        f"{row['build_s']:>6.1f}/{row['limit_build_s']:<6.1f} {b['codes_and_ids']:>13.1f} {b['index_other']:>6.1f} "
        f"{b['id_map']:>5.1f} {b['rerank']:>6.0f} {row['recall_at_1']:>6.3f}/{row['limit_recall_at_1']:<6.3f} "
        f"{row['recall_at_10']:>6.3f}/{row['limit_recall_at_10']:<6.3f} "
        f"{row['qps_single']:>7.0f}/{row['limit_qps_single']:<7.0f} "
        f"{row['qps_batch32']:>7.0f}/{row['limit_qps_batch32']:<7.0f} "
        f"{row['overhead_single']:>+5.0%}/{row['overhead_batch32']:<+5.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="gallery sizes N")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 512], help="embedding dimensions d")
    parser.add_argument(
        "--nprobe", type=int, nargs="+", default=[0], help="IVF probes to sweep; 0: the default (a quarter of nlist)"
    )
    parser.add_argument("--rerank-candidates", type=int, default=IndexSettings().rerank_candidates)
    parser.add_argument("--queries", type=int, default=1000, help="probes for recall and batched QPS")
    parser.add_argument("--single-queries", type=int, default=300, help="probes timed one at a time")
    parser.add_argument("--repeats", type=int, default=2, help="timing rounds (best kept)")
    parser.add_argument("--intra-cos", type=float, default=0.7, help="mean cosine of two samples of one identity")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_index.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    print("ours/limit side by side; limit = the same FAISS index used directly. B/vec = bytes per vector.")
    print(_HEADER)
    for n in args.sizes:
        for dim in args.dims:
            rows += run(n, dim, args)
    print()
    print(_HEADER)
    for row in rows:
        print(_line(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "omp_threads": faiss.omp_get_max_threads(),
        "queries": args.queries,
        "intra_cos": args.intra_cos,
        "k": K,
        "batch": BATCH,
    }
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
