"""The registry of drift methods: one statistic = one pure function plus a
registration (name, feature types, default threshold), as evidently's stattests.

Each method module (`psi`, `js`, `wasserstein`, `ks`, `chi2`, `mmd`) defines its
function and calls `register(DriftMethod(...))` at import; `METHODS` then maps
the name (the `method` label of `monitor_drift_score`) to its declaration.

What a method reads from a window is given by `needs`:

- ``histogram``: counts over the reference's bins (or categories), aligned:
  ``func(reference_counts, current_counts)``;
- ``sample``: raw values from the reference sample and the window's reservoir:
  ``func(reference_values, current_values)``;
- ``embeddings``: two matrices of sentence embeddings, one row per text:
  ``func(reference, current, permutations=..., seed=...)``.

Every function returns a `Stat`: a scale-free score (compared with the
threshold) and a p-value, or None for a method without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

NUMERIC = "numeric"
CATEGORICAL = "categorical"
EMBEDDING = "embedding"
FEATURE_TYPES = (NUMERIC, CATEGORICAL, EMBEDDING)

HISTOGRAM = "histogram"
SAMPLE = "sample"
EMBEDDINGS = "embeddings"


class Stat(NamedTuple):
    score: float
    pvalue: float | None = None


@dataclass(frozen=True)
class DriftMethod:
    """The declaration of one drift statistic."""

    name: str
    feature_types: frozenset[str]
    default_threshold: float
    has_pvalue: bool
    needs: str
    func: Callable[..., Stat]
    description: str = ""

    def __post_init__(self):
        if not set(self.feature_types) <= set(FEATURE_TYPES):
            raise ValueError(f"{self.name}: unknown feature types {sorted(self.feature_types)}")
        if self.needs not in (HISTOGRAM, SAMPLE, EMBEDDINGS):
            raise ValueError(f"{self.name}: needs must be histogram, sample or embeddings")
        if not self.default_threshold > 0:
            raise ValueError(f"{self.name}: default_threshold must be > 0")


METHODS: dict[str, DriftMethod] = {}


def register(method: DriftMethod) -> DriftMethod:
    """Add `method` to `METHODS`; a name can be registered once."""
    if method.name in METHODS:
        raise ValueError(f"drift method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def methods_for(feature_type: str) -> list[DriftMethod]:
    """The registered methods that apply to a feature type, in registration order."""
    return [m for m in METHODS.values() if feature_type in m.feature_types]
