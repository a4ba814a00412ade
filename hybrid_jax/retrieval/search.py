"""Top-k maximum inner product search: exact (batched matmul + top-k) and ScaNN, one interface.

Both searchers return `(indices [Q, k] int64, scores [Q, k] float32)`, best first. Exact search
breaks ties by candidate index (lower index first, as `jax.lax.top_k` does). Rows the searcher
could not fill (ScaNN on a tiny pool) hold index -1 and score -inf.

ScaNN is optional: its wheel needs Linux x86-64 with AVX2, so the import is guarded and exact
search is the fallback. `choose_method` ("auto") picks exact search wherever it was measured to be
both faster than building and querying a ScaNN index and exact (docs/evaluation.md).
"""
from __future__ import annotations

import logging
import math

import numpy as np

from hybrid_jax.errors import InputError

try:  # the wheel is x86-64/AVX2 only and may fail at import time on other machines
    import scann as _scann
except Exception:  # noqa: BLE001 - any import failure means "unavailable"
    _scann = None

METHODS = ("auto", "exact", "scann")
# Measured on this 2-core CPU with benchmarks/search.py (dim 384; docs/evaluation.md): exact search
# costs ~2.2e-8 s per query-candidate pair; building a ScaNN index took these seconds (searching it
# is ~100x cheaper than exact search, so the build decides). "auto" estimates both and takes exact
# search when it is no slower: it is exact, and for one evaluation pass usually faster.
EXACT_S_PER_PAIR = 2.2e-8
SCANN_BUILD_S = ((1e4, 4.1), (1e5, 37.5), (1e6, 166.0))


def scann_build_seconds(n: int) -> float:
    """Measured build time, interpolated (and extrapolated) linearly in log-log space."""
    xs, ys = np.log([p[0] for p in SCANN_BUILD_S]), np.log([p[1] for p in SCANN_BUILD_S])
    x = np.log(max(n, 1))
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return float(np.exp(ys[i] + slope * (x - xs[i])))


def scann_available() -> bool:
    return _scann is not None


def choose_method(n_candidates: int, requested: str = "auto", n_queries: int = 0) -> str:
    """The searcher to use: 'exact' or 'scann'."""
    if requested not in METHODS:
        raise InputError(f"eval.search must be one of {METHODS} (got {requested!r})")
    if requested == "exact":
        return "exact"
    if not scann_available():
        if requested == "scann":
            logging.warning("eval.search='scann' but scann cannot be imported here: "
                            "using exact search")
        return "exact"
    if requested == "scann":
        return "scann"
    exact_s = n_queries * n_candidates * EXACT_S_PER_PAIR
    return "exact" if exact_s <= scann_build_seconds(n_candidates) else "scann"


def _as_matrix(x, what: str) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty [N, D] matrix, got shape {x.shape}")
    return x


def duplicate_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(duplicates, representatives): rows equal bit for bit to an earlier row, and that row.

    BLAS and XLA may compute the same dot product slightly differently at different column
    positions (measured here: identical candidates 3 and 10 scored differently for 40% of
    queries), so equal candidates would not tie. Scorers copy each duplicate's score from its
    representative, making ties between equal vectors exact and the tie rules deterministic.
    """
    v = np.ascontiguousarray(vectors)
    rows = v.view(np.dtype((np.void, v.dtype.itemsize * v.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    rep = first[inverse.reshape(-1)]
    dup = np.flatnonzero(rep != np.arange(len(v)))
    return dup, rep[dup]


class ExactSearcher:
    """Brute force: query blocks of fixed shape (one compile) times all candidates, then top-k.

    `relevant_ranks` gives exact ranks of chosen candidates (e.g. a query's relevant ones) under
    the pessimistic tie rule of evaluation/metrics.py, from the same scores, optionally with the
    top-k lists in the same pass (one matmul for both).
    """

    name = "exact"

    def __init__(self, candidates, block: int = 512):
        self.candidates = _as_matrix(candidates, "candidates")
        self.block = int(block)
        self.dup, self.rep = duplicate_rows(self.candidates)
        self._fns: dict = {}

    def _scores(self, q, c, dup, rep):
        s = q @ c.T
        return s.at[:, dup].set(s[:, rep])  # equal candidates tie exactly (duplicate_rows)

    def _fn(self, k: int, want_scores: bool):
        import jax

        def run(q, c, dup, rep):
            s = self._scores(q, c, dup, rep)
            return (jax.lax.top_k(s, k) if k else None), (s if want_scores else None)

        key = (k, want_scores)
        if key not in self._fns:
            self._fns[key] = jax.jit(run)
        return self._fns[key]

    def _blocks(self, queries, k: int, want_scores: bool):
        import jax

        queries = _as_matrix(queries, "queries")
        fn = self._fn(k, want_scores)
        cand = jax.device_put(self.candidates)
        for s in range(0, len(queries), self.block):
            q = queries[s:s + self.block]
            m = len(q)
            if m < self.block:  # pad so every block has the compiled shape
                q = np.concatenate([q, np.zeros((self.block - m, q.shape[1]), np.float32)])
            top, scores = fn(q, cand, self.dup, self.rep)
            yield s, m, top, (None if scores is None else np.asarray(scores)[:m])

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, val, _ = self.search_and_rank(queries, k, None)
        return idx, val

    def search_and_rank(self, queries, k: int, relevant):
        """(top-k indices, scores, ranks [Q, Rmax] float with inf padding or None).
        k = 0 skips the top-k lists."""
        n = self.candidates.shape[0]
        kk = min(int(k), n)
        q_n = len(queries)
        idx = np.full((q_n, k), -1, np.int64)
        val = np.full((q_n, k), -np.inf, np.float32)
        r_max = max((len(r) for r in relevant), default=0) if relevant is not None else 0
        ranks = np.full((q_n, r_max), np.inf) if relevant is not None else None
        for s, m, top, scores in self._blocks(queries, kk, r_max > 0):
            if top is not None:
                val[s:s + m, :kk] = np.asarray(top[0])[:m]
                idx[s:s + m, :kk] = np.asarray(top[1])[:m]
            if scores is not None:
                for i, rel in enumerate(relevant[s:s + m]):
                    ranks[s + i, :len(rel)] = pessimistic_ranks(scores[i], rel)
        return idx, val, ranks


def pessimistic_ranks(scores: np.ndarray, relevant) -> np.ndarray:
    """1-based ranks of candidates `relevant` in one row of scores: behind every candidate with a
    higher score and every tied non-relevant one; tied relevant ones in index order."""
    rel = np.asarray(relevant, np.int64)
    if len(rel) == 0:
        return np.zeros(0)
    s_rel = scores[rel]
    if len(rel) <= 8:  # a few passes over the row beat a sort
        ge = np.array([np.count_nonzero(scores >= t) for t in s_rel])
    else:
        ge = len(scores) - np.searchsorted(np.sort(scores), s_rel, side="left")
    later_tie = (s_rel[None, :] == s_rel[:, None]) & (rel[None, :] > rel[:, None])
    return (ge - later_tie.sum(axis=1)).astype(np.float64)


def exact_relevant_ranks(query_vecs, cand_vecs, relevant, block: int = 256) -> np.ndarray:
    """Exact pessimistic ranks [Q, Rmax] (inf-padded) of each query's `relevant` candidate
    indices among `cand_vecs` (see evaluation/metrics.py for the tie rule)."""
    return ExactSearcher(cand_vecs, block=block).search_and_rank(query_vecs, 0, relevant)[2]


def scann_params(n: int, k: int) -> dict:
    """ScaNN settings from the pool size: ~sqrt(n) leaves, search ~5% of them (at least 10),
    2-dim anisotropic hashing blocks, exact re-scoring of the best max(4k, 200)."""
    leaves = int(max(2, min(n // 40, round(math.sqrt(n)))))
    return dict(
        num_leaves=leaves,
        num_leaves_to_search=int(min(leaves, max(10, round(0.05 * leaves)))),
        training_sample_size=int(min(n, 250_000)),
        reorder=int(min(n, max(4 * k, 200))),
        use_tree=n >= 2_000,
    )


class ScannSearcher:
    """ScaNN: k-means tree, asymmetric hashing, exact reordering (dot product on unit vectors)."""

    name = "scann"

    def __init__(self, candidates, k: int = 100, params: dict | None = None, threads: int = 0):
        if _scann is None:
            raise InputError("scann is not importable on this machine (needs x86-64 with AVX2)")
        self.candidates = _as_matrix(candidates, "candidates")
        n, dim = self.candidates.shape
        self.params = params or scann_params(n, k)
        p = self.params
        b = _scann.scann_ops_pybind.builder(self.candidates, int(k), "dot_product")
        if p["use_tree"]:
            b = b.tree(num_leaves=p["num_leaves"], num_leaves_to_search=p["num_leaves_to_search"],
                       training_sample_size=p["training_sample_size"])
        # Asymmetric hashing groups dimensions in pairs; an odd dimension falls back to brute force.
        b = b.score_ah(2, anisotropic_quantization_threshold=0.2) if dim % 2 == 0 \
            else b.score_brute_force()
        self.index = b.reorder(p["reorder"]).build()
        if threads:
            self.index.set_num_threads(int(threads))

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _as_matrix(queries, "queries")
        i, v = self.index.search_batched(queries, final_num_neighbors=int(k))
        idx = np.full((len(queries), k), -1, np.int64)
        val = np.full((len(queries), k), -np.inf, np.float32)
        m = min(k, i.shape[1])
        idx[:, :m] = i[:, :m].astype(np.int64)
        val[:, :m] = v[:, :m]
        # ScaNN may return fewer neighbours than asked for; its padding is not a real candidate.
        bad = ~np.isfinite(val) | (idx >= len(self.candidates))
        idx[bad], val[bad] = -1, -np.inf
        return idx, val


def build_searcher(candidates, method: str = "auto", k: int = 100, n_queries: int = 0):
    """A searcher over `candidates` [N, D] (unit vectors for cosine)."""
    chosen = choose_method(len(candidates), method, n_queries)
    if chosen == "scann":
        return ScannSearcher(candidates, k=k)
    return ExactSearcher(candidates)


def recall_vs_exact(approx_idx: np.ndarray, exact_idx: np.ndarray, k: int | None = None) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k (the usual ANN recall@k)."""
    k = k or exact_idx.shape[1]
    a, e = approx_idx[:, :k], exact_idx[:, :k]
    hits = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, int((y >= 0).sum()))
            for x, y in zip(a, e)]
    return float(np.mean(hits))
