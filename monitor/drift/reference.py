"""Reference profiles: what "normal" looks like for one domain and version.

A reference is built from the first `drift.reference_records` accepted records
of a domain (or from a file, `monitor reference build`). Per numeric feature it
keeps the bin edges (the reference's own quantiles, plus its minimum and
maximum so that values outside the reference range get bins of their own),
the counts over those bins, the mean and standard deviation, and a sample of
raw values for the tests that need them (KS, Wasserstein). Per categorical
feature it keeps the counts of its `drift.max_categories` most common values
plus `__other__`; and a sample of prompt texts for semantic drift.

>>> b = ReferenceBuilder("legal", "v1", ("prompt_tokens",), ("finish_reason",), limit=4, bins=2)
>>> for i, t in enumerate((100, 120, 140, 400)):
...     b.add((float(t),), ("stop",), None, 1000.0 + i, key=i / 4)
>>> ref = b.build(built_at=2000.0, source="auto")
>>> ref.count, ref.numeric["prompt_tokens"].edges, ref.numeric["prompt_tokens"].counts
(4, [100.0, 130.0, 400.0], [1, 1, 2, 0])
>>> Reference.from_bytes(ref.to_bytes()) == ref
True
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from dataclasses import dataclass, field, fields

import numpy as np
import orjson

from monitor.timestamps import rfc3339
from monitor.windows.sketch import OTHER, Layout


ANY = "*"  # Reference.replaces: whatever is active


@dataclass
class NumericProfile:
    edges: list[float]
    counts: list[int]
    mean: float
    std: float
    count: int
    sample: list[float]


@dataclass
class CategoricalProfile:
    counts: dict[str, int]  # vocabulary + OTHER
    count: int


@dataclass
class Reference:
    """One domain's reference for one version (`version` "" when no version is active)."""

    domain: str
    version: str
    built_at: float
    start: float
    end: float
    count: int
    source: str
    numeric: dict[str, NumericProfile] = field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    id: str = ""
    # The id of the active reference this one replaces (None: the domain had none;
    # ANY: replace whatever is active, as `monitor reference build` does). The store
    # keeps a reference set meanwhile rather than overwrite it. Not stored.
    replaces: str | None = field(default=None, repr=False, compare=False)
    # numpy copies of the numeric samples, made on first use by the statistics.
    _arrays: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if not self.id:
            self.id = hashlib.sha256(self._content()).hexdigest()[:16]

    def _doc(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("_arrays", "replaces")}

    def _content(self) -> bytes:
        doc = self._doc()
        del doc["id"]
        return orjson.dumps(doc, default=_encode, option=orjson.OPT_SORT_KEYS)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self._doc(), default=_encode)

    def sample(self, feature: str) -> np.ndarray:
        """The numeric feature's reference sample as an array (cached)."""
        array = self._arrays.get(feature)
        if array is None:
            array = self._arrays[feature] = np.asarray(self.numeric[feature].sample, dtype=float)
        return array

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Reference":
        doc = orjson.loads(raw)
        doc["numeric"] = {k: NumericProfile(**v) for k, v in doc["numeric"].items()}
        doc["categorical"] = {k: CategoricalProfile(**v) for k, v in doc["categorical"].items()}
        return cls(**doc)

    def layout(self, features, k: int, k_texts: int, max_chars: int) -> Layout:
        """How windows sketch records (read by the FeatureExtractor `features`) against
        this reference."""
        numeric_names, categorical_names = features.numeric_names, features.categorical_names
        numeric = tuple((i, np.array(p.edges), p.mean) for i, name in enumerate(numeric_names)
                        if (p := self.numeric.get(name)) is not None)
        categorical = tuple((i, frozenset(p.counts) - {OTHER})
                            for i, name in enumerate(categorical_names)
                            if (p := self.categorical.get(name)) is not None)
        return Layout(self.id, numeric, categorical, tuple(numeric_names), tuple(categorical_names),
                      k, min(k_texts, k) if self.texts else 0, max_chars, features)

    def summary(self) -> dict:
        """A JSON-able description (what `monitor reference show` prints)."""
        return {
            "domain": self.domain, "version": self.version, "id": self.id, "source": self.source,
            "records": self.count, "built_at": rfc3339(self.built_at),
            "time_range": [rfc3339(self.start), rfc3339(self.end)],
            "numeric": {name: {"count": p.count, "mean": p.mean, "std": p.std,
                               "min": p.edges[0], "max": p.edges[-1], "bins": len(p.counts),
                               "edges": p.edges, "sample": len(p.sample)}
                        for name, p in self.numeric.items()},
            "categorical": {name: {"count": p.count,
                                   "shares": {c: n / p.count for c, n in
                                              sorted(p.counts.items(), key=lambda kv: -kv[1]) if n}}
                            for name, p in self.categorical.items()},
            "texts": len(self.texts),
        }


class ReferenceBuilder:
    """Collects records until `limit` (None: no limit, for a file) and builds a `Reference`."""

    def __init__(self, domain: str, version: str, numeric_names: tuple, categorical_names: tuple,
                 limit: int | None = 5000, sample_size: int = 2000, bins: int = 10,
                 max_categories: int = 32, texts: int = 256, max_chars: int = 512, seed: int = 0):
        self.domain = domain
        self.version = version
        self.numeric_names = tuple(numeric_names)
        self.categorical_names = tuple(categorical_names)
        self.limit = limit
        self.sample_size = sample_size
        self.bins = bins
        self.max_categories = max_categories
        self.n_texts = texts
        self.max_chars = max_chars
        self.seed = seed
        self.replaces: str | None = None  # see Reference.replaces
        self.numeric_rows: list[tuple] = []
        self.categorical_rows: list[tuple] = []
        self.texts: list[tuple] = []  # max-heap by key (negated) of (key, text)
        self.start = float("inf")
        self.end = float("-inf")

    @property
    def count(self) -> int:
        return len(self.numeric_rows)

    @property
    def full(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def add(self, numeric: tuple, categorical: tuple, text: str | None, timestamp: float,
            key: float) -> None:
        self.numeric_rows.append(numeric)
        self.categorical_rows.append(categorical)
        self.start = min(self.start, timestamp)
        self.end = max(self.end, timestamp)
        if text and self.n_texts:
            if len(self.texts) < self.n_texts:
                heapq.heappush(self.texts, (-key, text[:self.max_chars]))
            elif key < -self.texts[0][0]:
                heapq.heapreplace(self.texts, (-key, text[:self.max_chars]))

    def build(self, built_at: float, source: str) -> Reference:
        """The reference of the records added so far (at least two are needed)."""
        if self.count < 2:
            raise ValueError(f"domain {self.domain!r}: a reference needs at least 2 records, "
                             f"got {self.count}")
        rng = np.random.default_rng(self.seed)
        numeric = {}
        for i, name in enumerate(self.numeric_names):
            values = np.array([r[i] for r in self.numeric_rows if r[i] is not None], dtype=float)
            if len(values) >= 2:
                numeric[name] = _numeric_profile(values, self.bins, self.sample_size, rng)
        categorical = {}
        for i, name in enumerate(self.categorical_names):
            counts = Counter(r[i] for r in self.categorical_rows if r[i] is not None)
            if counts:
                categorical[name] = _categorical_profile(counts, self.max_categories)
        texts = [t for _, t in sorted(self.texts, reverse=True)]
        reference = Reference(self.domain, self.version, built_at, self.start, self.end,
                              self.count, source, numeric, categorical, texts)
        reference.replaces = self.replaces
        return reference


def _numeric_profile(values: np.ndarray, bins: int, sample_size: int, rng) -> NumericProfile:
    quantiles = np.quantile(values, np.linspace(0.0, 1.0, bins + 1))
    edges = np.unique(quantiles)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    sample = values if len(values) <= sample_size else rng.choice(values, sample_size, replace=False)
    return NumericProfile([float(e) for e in edges], [int(c) for c in counts], float(values.mean()),
                          float(values.std()), int(len(values)), [float(v) for v in sample])


def _categorical_profile(counts: Counter, max_categories: int) -> CategoricalProfile:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[:max_categories])
    kept[OTHER] = kept.get(OTHER, 0) + sum(c for _, c in ranked[max_categories:])
    return CategoricalProfile(kept, sum(counts.values()))


def _encode(value):
    if isinstance(value, (NumericProfile, CategoricalProfile)):
        return value.__dict__
    raise TypeError(type(value).__name__)
