"""Maximum Mean Discrepancy (MMD) between two sets of embeddings, with a permutation test.

MMD is the distance between the mean embeddings of the two samples in the
feature space of a kernel; with a characteristic kernel (the Gaussian RBF) it
is 0 if and only if the two distributions are equal, so it sees any change in
the distribution of sentence embeddings, not only a shift of their mean.

- Kernel: k(x, y) = exp(-||x - y||^2 / (2 sigma^2)) on the pooled sample, with
  the median heuristic sigma^2 = median of the pooled pairwise squared
  distances over distinct pairs (i < j); if that median is 0 (more than half
  the pairs coincide) sigma^2 = 1.
- Score: the unbiased estimate
  MMD^2_u = sum_{i!=j} k(x_i,x_j) / (n(n-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
            - 2 sum_{i,j} k(x_i,y_j) / (nm),
  which is centred on 0 under no drift and so can be slightly negative.
- p-value: a permutation test of the pooled labels, reusing the kernel
  matrix (the bandwidth is fixed from the pooled sample, which is invariant
  under permutation).  Permutations are drawn from
  numpy.random.default_rng(seed), so the result is deterministic, and
  evaluated in chunks with one matrix product each.  A permuted statistic
  counts as an exceedance if it is >= the observed one (minus 1e-12, so that
  rounding cannot break exact ties).  Besag-Clifford sequential stopping:
  as soon as ``STOP_AFTER`` = 20 exceedances have been seen, after L
  permutations, the p-value is 20 / L (the sequential Monte Carlo p-value;
  it is then >= 20 / permutations, i.e. clearly not small).  Otherwise all
  permutations run and p = (1 + exceedances) / (1 + permutations), which is
  never 0 (>= 1/1001 with the default 1000).

Default threshold 0.01 on MMD^2_u, calibrated on all-MiniLM-L6-v2 embeddings
of synthetic prompts (256 reference vs 128 window texts): windows of the same
topic scored at most 0.0015 over 50 draws (mean -0.0003); a full change of
topic with unchanged lengths scored 0.41-0.48; a 20% admixture of another
topic about 0.019, a 10% admixture about 0.005 (significant, but below the
threshold: lower it to 0.005 to alert on that).

>>> rng = np.random.default_rng(1)
>>> x = rng.normal(size=(60, 4))
>>> same = mmd(x, rng.normal(size=(60, 4)), permutations=200)
>>> shifted = mmd(x, rng.normal(size=(60, 4)) + 1.0, permutations=200)
>>> same.pvalue > 0.05, shifted.pvalue < 0.01, shifted.score > 0.1
(True, True, True)
>>> mmd(x, x + 1.0, permutations=200) == mmd(x, x + 1.0, permutations=200)
True
"""

from __future__ import annotations

import numpy as np

from monitor.drift.methods import EMBEDDING, EMBEDDINGS, DriftMethod, Stat, register

DEFAULT_THRESHOLD = 0.01
DEFAULT_PERMUTATIONS = 1000
STOP_AFTER = 20  # Besag-Clifford: stop once this many permuted statistics reach the observed one
TIE_TOLERANCE = 1e-12
_CHUNK = 250  # permutations per matrix product: small enough for early stopping to pay off
_CHUNK_ELEMENTS = 1 << 21  # and a chunk holds at most this many floats (16 MiB)


def _matrix(name: str, values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows x embedding dimensions), "
                         f"got ndim={a.ndim}")
    if a.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 rows for the unbiased MMD^2, got {a.shape[0]}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def rbf_kernel_matrix(pooled: np.ndarray) -> np.ndarray:
    """Gaussian kernel matrix of the rows of `pooled`, bandwidth by the median heuristic."""
    z = pooled - pooled.mean(axis=0)  # centring reduces cancellation in |a|^2 + |b|^2 - 2ab
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    sigma2 = float(np.median(d2[np.triu_indices(d2.shape[0], k=1)]))
    if not sigma2 > 0:
        sigma2 = 1.0
    return np.exp(-d2 / (2.0 * sigma2))


def _mmd2_for_labels(k0: np.ndarray, row_sums: np.ndarray, total: float,
                     labels: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 for each row of `labels` (c x N, 1 = first sample, 0 = second),
    from the kernel matrix with a zero diagonal `k0`, its row sums and its total."""
    sxx = np.einsum("ij,ij->i", labels @ k0, labels)  # sum over x-x pairs, i != j
    sx_all = labels @ row_sums                         # sum over x-anything pairs
    sxy = sx_all - sxx
    syy = total - 2.0 * sx_all + sxx
    return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2.0 * sxy / (n * m)


def mmd(reference, current, permutations: int = DEFAULT_PERMUTATIONS, seed=0) -> Stat:
    """Unbiased MMD^2 (RBF kernel, median bandwidth) and its permutation p-value:
    `Stat(score=mmd2, pvalue)`; see the module docstring for the p-value formula."""
    x = _matrix("reference", reference)
    y = _matrix("current", current)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference and current have different embedding dimensions "
                         f"({x.shape[1]} != {y.shape[1]})")
    if isinstance(permutations, bool) or not isinstance(permutations, (int, np.integer)) \
            or permutations < 1:
        raise ValueError(f"permutations must be a positive integer, got {permutations!r}")
    n, m = x.shape[0], y.shape[0]
    size = n + m
    k0 = rbf_kernel_matrix(np.vstack([x, y]))
    np.fill_diagonal(k0, 0.0)
    row_sums = k0.sum(axis=1)
    total = float(row_sums.sum())

    base = np.zeros(size)
    base[:n] = 1.0
    observed = float(_mmd2_for_labels(k0, row_sums, total, base[None, :], n, m)[0])

    rng = np.random.default_rng(seed)
    largest = max(1, min(permutations, _CHUNK, _CHUNK_ELEMENTS // size))
    # Small chunks first: without drift the early stop usually comes within a few dozen.
    chunk = min(largest, 50)
    done = exceed = 0
    while done < permutations:
        c = min(chunk, permutations - done)
        chunk = min(largest, chunk * 2)
        labels = rng.permuted(np.broadcast_to(base, (c, size)), axis=1)
        hits = _mmd2_for_labels(k0, row_sums, total, labels, n, m) >= observed - TIE_TOLERANCE
        new = int(np.count_nonzero(hits))
        if exceed + new >= STOP_AFTER:
            # Stop at the permutation that brought the STOP_AFTER-th exceedance.
            at = int(np.flatnonzero(hits)[STOP_AFTER - exceed - 1])
            return Stat(observed, STOP_AFTER / (done + at + 1))
        exceed += new
        done += c
    return Stat(observed, (1 + exceed) / (1 + permutations))


register(DriftMethod(
    name="mmd",
    feature_types=frozenset({EMBEDDING}),
    default_threshold=DEFAULT_THRESHOLD,
    has_pvalue=True,
    needs=EMBEDDINGS,
    func=mmd,
    description="Unbiased MMD^2 of sentence embeddings (RBF kernel, permutation p-value)",
))
