"""ScaNN versus exact search on clustered synthetic unit vectors: speed and recall@k.

    python -m benchmarks.search 10000 100000 [--dim 384] [--queries 1000]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Sequence

import numpy as np

from hybrid_jax.retrieval import search


def clustered_unit_vectors(n: int, dim: int, n_clusters: int, rng: np.random.Generator,
                           centres: np.ndarray | None = None, spread: float = 0.6):
    """Points around random cluster centres, normalised (embeddings are clustered, not uniform)."""
    if centres is None:
        centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, len(centres), n)]
    x = x + spread * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centres


def search_benchmark(n_candidates: int, dim: int = 384, n_queries: int = 1000, k: int = 20,
                     n_clusters: int | None = None, seed: int = 0, repeats: int = 1,
                     leaves_to_search: Sequence[int] = ()) -> dict:
    """Queries/s of both searchers on clustered synthetic unit vectors (search only, after a
    warm-up; median of `repeats`), ScaNN's build time, and ScaNN's recall@k against exact
    search on the same queries; `leaves_to_search` adds ScaNN operating points."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(10, n_candidates // 100)
    cands, centres = clustered_unit_vectors(n_candidates, dim, n_clusters, rng)
    queries, _ = clustered_unit_vectors(n_queries, dim, n_clusters, rng, centres)
    out = {"n_candidates": n_candidates, "dim": dim, "clusters": n_clusters}
    out.update(pool_benchmark(cands, queries, k, repeats, leaves_to_search))
    return out


def _timed(fn, repeats: int):
    times, result = [], None
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return float(statistics.median(times)), result


def pool_benchmark(cands: np.ndarray, queries: np.ndarray, k: int = 20, repeats: int = 1,
                   leaves_to_search: Sequence[int] = ()) -> dict:
    """Exact vs ScaNN on given candidate and query vectors (see `search_benchmark`)."""
    n_queries = len(queries)
    out = {"n_candidates": len(cands), "n_queries": n_queries, "k": k, "repeats": repeats}
    exact = search.ExactSearcher(cands)
    exact.search(queries[:8], k)  # compile outside the timing
    out["exact_search_s"], (e_idx, _) = _timed(lambda: exact.search(queries, k), repeats)
    out["exact_qps"] = n_queries / out["exact_search_s"]

    if search.scann_available():
        t = time.perf_counter()
        sc = search.ScannSearcher(cands, k=k)
        out["scann_build_s"] = time.perf_counter() - t
        out["scann_params"] = sc.params
        sc.search(queries[:8], k)
        out["scann_search_s"], (s_idx, _) = _timed(lambda: sc.search(queries, k), repeats)
        out["scann_qps"] = n_queries / out["scann_search_s"]
        out[f"scann_recall@{k}"] = search.recall_vs_exact(s_idx, e_idx, k)
        out["scann_speedup"] = out["scann_qps"] / out["exact_qps"]
        points = []
        for leaves in leaves_to_search:
            if not sc.params["use_tree"] or leaves > sc.params["num_leaves"]:
                continue
            s, (idx, _) = _timed(lambda: sc.index.search_batched(
                queries, final_num_neighbors=k, leaves_to_search=int(leaves)), repeats)
            points.append({"leaves_to_search": int(leaves), "qps": n_queries / s,
                           "speedup": (n_queries / s) / out["exact_qps"],
                           f"recall@{k}": search.recall_vs_exact(idx.astype(np.int64), e_idx, k)})
        if points:
            out["scann_sweep"] = points
    return out


def embeddings_pool(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, queries) from an evaluation's embeddings.npz (`eval.save_embeddings`)."""
    with np.load(path) as z:
        return z["candidate_vectors"].astype(np.float32), z["query_vectors"].astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("sizes", type=int, nargs="+")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=20)
    a = p.parse_args(argv)
    for n in a.sizes:
        print(json.dumps(search_benchmark(n, a.dim, a.queries, a.k)), flush=True)


if __name__ == "__main__":
    main()
