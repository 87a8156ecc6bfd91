"""Drift sketches: what one bucket keeps about its records' features, bounded
in size whatever the traffic, mergeable across the buckets of a window.

Per bucket, against the layout of the domain's reference:

- numeric features: counts over the reference-quantile bins, and the count,
  sum and sum of squares of `value - reference mean` (running moments that
  stay exact in float64 because they are centred);
- categorical features: counts over the reference's vocabulary (at most
  `drift.max_categories` names) plus `__other__` for anything else;
- a reservoir of at most `k` records (their feature values), the `k` with the
  smallest random keys: a uniform sample of the bucket that merges exactly;
- a reservoir of at most `k_texts` prompt texts (cut to `max_chars`): the
  smallest keys among the records that carry a text, for the sentence
  embeddings of semantic drift.

A window's sample takes from each bucket a share proportional to the bucket's
traffic (`window_profile`), so a quiet minute does not weigh as much as a busy
one.

>>> import numpy as np
>>> from monitor.features import FeatureExtractor
>>> from monitor.records import Record
>>> layout = Layout("ref-1", numeric=((0, (10.0, 20.0), 15.0),), categorical=((0, {"stop"}),),
...                 numeric_names=("prompt_tokens",), categorical_names=("finish_reason",),
...                 k=4, k_texts=2, max_chars=8, features=FeatureExtractor())
>>> s = DriftSketch("ref-1", layout, np.random.default_rng(0))
>>> for i, v in enumerate((5, 12, 30)):
...     s.add(FeatureExtractor().raw(Record(0.0, "d", prompt_tokens=v, input_text="hello world",
...                                         finish_reason="stop" if i else "length")))
>>> s.fold()
>>> s.hist, s.cats, len(s.reservoir), s.texts[0][1]
([[1, 1, 1]], [{'__other__': 1, 'stop': 2}], 3, 'hello wo')
>>> DriftSketch.from_doc(s.to_doc()).hist
[[1, 1, 1]]
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from monitor.features.extract import MAX_CATEGORY_LENGTH

OTHER = "__other__"


@dataclass(frozen=True)
class Layout:
    """How records are sketched against one reference: bin edges and centring
    per numeric feature, vocabulary per categorical feature, reservoir sizes.
    `numeric` holds (index into the feature row, interior edges, mean) for each
    numeric feature the reference has; `categorical` (index, vocabulary).
    `features` is the `FeatureExtractor` that reads records."""

    reference_id: str
    numeric: tuple = ()
    categorical: tuple = ()
    numeric_names: tuple = ()
    categorical_names: tuple = ()
    k: int = 64
    k_texts: int = 0
    max_chars: int = 512
    features: object = field(default=None, compare=False, repr=False)


# Records wait in a sketch's `pending` list until a fold bins them all at once
# with numpy; this bounds that list (and the memory it pins).
FOLD_AT = 4096


class DriftSketch:
    """The drift sketch of one bucket (see the module docstring).

    `add(raw)` only queues the record's `FeatureExtractor.raw()` tuple: the hot
    path costs one list append. `fold()` (called before anything reads the
    sketch) bins the queue with numpy and draws the records' reservoir keys
    from `rng`."""

    __slots__ = ("reference_id", "count", "hist", "moments", "cats", "reservoir", "texts",
                 "pending", "layout", "rng")

    def __init__(self, reference_id: str, layout: Layout | None = None, rng=None):
        self.reference_id = reference_id
        self.layout = layout
        self.rng = rng
        self.count = 0
        self.hist: list[list[int]] = [[0] * (len(e) + 1) for _, e, _ in layout.numeric] if layout else []
        self.moments: list[list[float]] = [[0, 0.0, 0.0] for _ in layout.numeric] if layout else []
        self.cats: list[dict[str, int]] = [{} for _ in layout.categorical] if layout else []
        # Max-heaps by key (keys negated): the root is the entry to evict.
        self.reservoir: list[tuple] = []
        self.texts: list[tuple] = []
        self.pending: list = []

    def add(self, raw: tuple) -> None:
        pending = self.pending
        pending.append(raw)
        if len(pending) >= FOLD_AT:
            self.fold()

    def fold(self) -> None:
        """Bin the pending records (needs `layout` and `rng`, which the tracker attaches)."""
        records = self.pending
        if not records:
            return
        self.pending = []
        layout = self.layout
        features = layout.features
        self.count += len(records)
        numeric_columns, categorical_columns, texts_column = features.columns(records)
        for j, (i, edges, mean) in enumerate(layout.numeric):
            column = numeric_columns[:, i]
            values = column[~np.isnan(column)]
            if not len(values):
                continue
            bins = np.bincount(np.searchsorted(edges, values, side="left"),
                               minlength=len(edges) + 1)
            hist = self.hist[j]
            for b in np.flatnonzero(bins):
                hist[b] += int(bins[b])
            d = values - mean
            m = self.moments[j]
            m[0] += int(len(d))
            m[1] += float(d.sum())
            m[2] += float(d @ d)
        for j, (i, vocabulary) in enumerate(layout.categorical):
            counts = self.cats[j]
            for value, n in Counter(categorical_columns[i]).items():
                if value is None:
                    continue
                if len(value) > MAX_CATEGORY_LENGTH:
                    value = value[:MAX_CATEGORY_LENGTH]
                if value not in vocabulary:
                    value = OTHER
                counts[value] = counts.get(value, 0) + n
        keys = self.rng.random(len(records))
        reservoir = self.reservoir
        bound = -reservoir[0][0] if len(reservoir) >= layout.k else 1.0
        for position in np.flatnonzero(keys < bound):
            key = float(keys[position])
            if len(reservoir) >= layout.k and not key < -reservoir[0][0]:
                continue
            numeric, categorical = features.row_from_raw(records[position])
            entry = (-key, numeric, categorical)
            if len(reservoir) < layout.k:
                heapq.heappush(reservoir, entry)
            else:
                heapq.heapreplace(reservoir, entry)
        if layout.k_texts:
            # Its own reservoir among the records that carry a text, with the same keys.
            texts = self.texts
            bound = -texts[0][0] if len(texts) >= layout.k_texts else 1.0
            for position in np.flatnonzero(keys < bound):
                text = texts_column[position]
                if not text:
                    continue
                key = float(keys[position])
                if len(texts) < layout.k_texts:
                    heapq.heappush(texts, (-key, text[:layout.max_chars]))
                elif key < -texts[0][0]:
                    heapq.heapreplace(texts, (-key, text[:layout.max_chars]))

    def to_doc(self) -> dict:
        self.fold()
        return {"ref": self.reference_id, "count": self.count, "hist": self.hist,
                "moments": self.moments, "cats": self.cats,
                "reservoir": [[-k, list(n), list(c)] for k, n, c in self.reservoir],
                "texts": [[-k, t] for k, t in self.texts]}

    @classmethod
    def from_doc(cls, doc: dict) -> "DriftSketch":
        sketch = cls(doc["ref"])
        sketch.count = doc["count"]
        sketch.hist = doc["hist"]
        sketch.moments = doc["moments"]
        sketch.cats = doc["cats"]
        sketch.reservoir = [(-k, tuple(n), tuple(c)) for k, n, c in doc["reservoir"]]
        heapq.heapify(sketch.reservoir)
        sketch.texts = [(-k, t) for k, t in doc["texts"]]
        heapq.heapify(sketch.texts)
        return sketch


@dataclass
class WindowProfile:
    """A domain's window merged from its buckets' sketches (one reference)."""

    reference_id: str
    count: int = 0
    hist: list = field(default_factory=list)  # per numeric feature of the layout
    moments: list = field(default_factory=list)
    cats: list = field(default_factory=list)
    rows: list = field(default_factory=list)  # sampled (numeric, categorical) rows
    texts: list = field(default_factory=list)
    _matrix: object = field(default=None, repr=False, compare=False)

    def values(self, layout: Layout, j: int) -> np.ndarray:
        """The sampled values of the layout's j-th numeric feature."""
        if self._matrix is None:
            width = len(layout.numeric_names)
            self._matrix = (np.array([n for n, _ in self.rows], dtype=float) if self.rows
                            else np.empty((0, width)))
        column = self._matrix[:, layout.numeric[j][0]]
        return column[~np.isnan(column)]

    def mean_std(self, layout: Layout, j: int) -> tuple[float, float] | None:
        n, s1, s2 = self.moments[j]
        if not n:
            return None
        mean_d = s1 / n
        return layout.numeric[j][2] + mean_d, max(s2 / n - mean_d * mean_d, 0.0) ** 0.5


def window_profile(sketches: list[DriftSketch], layout: Layout) -> WindowProfile:
    """Merge the sketches (all of `layout`'s reference) of one window."""
    profile = WindowProfile(layout.reference_id)
    profile.hist = [[0] * (len(e) + 1) for _, e, _ in layout.numeric]
    profile.moments = [[0, 0.0, 0.0] for _ in layout.numeric]
    profile.cats = [{} for _ in layout.categorical]
    if not sketches:
        return profile
    for s in sketches:
        s.fold()
    for s in sketches:
        profile.count += s.count
        for total, part in zip(profile.hist, s.hist):
            for b, c in enumerate(part):
                total[b] += c
        for total, part in zip(profile.moments, s.moments):
            for b in range(3):
                total[b] += part[b]
        for total, part in zip(profile.cats, s.cats):
            for name, c in part.items():
                total[name] = total.get(name, 0) + c
    # Proportional allocation: every bucket contributes the same fraction of its
    # records, limited by the fullest reservoir relative to its traffic.
    fraction = min(1.0, min((len(s.reservoir) / s.count for s in sketches if s.count), default=1.0))
    text_fraction = min((len(s.texts) / s.count for s in sketches if s.count and s.texts),
                        default=0.0)
    for s in sketches:
        take = round(fraction * s.count)
        profile.rows.extend((n, c) for _, n, c in heapq.nlargest(take, s.reservoir))
        if text_fraction:
            take = round(text_fraction * s.count)
            profile.texts.extend(t for _, t in heapq.nlargest(take, s.texts))
    return profile
