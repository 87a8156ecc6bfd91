"""Per-domain drift state beside the windows: references, their builders and
the sketching of each accepted record.

A domain without a reference feeds its first `drift.reference_records`
accepted records to a `ReferenceBuilder`; once built, the reference is used
(and handed to the state store), and every later record is sketched into its
bucket against that reference's layout. `activate(domain, version)` is the hook
for the adapter registry: a new active version gets its own reference, the
stored one when there is one, else one built from the records that follow.

Record keys for the reservoirs come from a seeded generator, so a replay of
the same file always samples the same records.
"""

from __future__ import annotations

import logging
import random

import numpy as np

from monitor.drift.evaluate import DomainWindow, DriftEvaluation, evaluate
from monitor.drift.reference import ANY, Reference, ReferenceBuilder
from monitor.features import FeatureExtractor
from monitor.windows.sketch import FOLD_AT, DriftSketch, Layout, window_profile

log = logging.getLogger(__name__)


class DriftTracker:
    """Holds references and sketches records; `evaluate(windows, at)` runs the statistics."""

    def __init__(self, cfg, embedder=None, seed: int = 0):
        self.cfg = cfg
        self.embedder = embedder
        self.features = FeatureExtractor(cfg.attributes)
        self._row = self.features.row
        self._raw = self.features.raw
        self._random = random.Random(seed).random
        self._rng = np.random.default_rng(seed)
        self._texts = embedder is not None and cfg.embeddings.enabled
        self.references: dict[str, Reference] = {}
        self.layouts: dict[str, Layout] = {}
        self.builders: dict[str, ReferenceBuilder] = {}
        self.versions: dict[str, str] = {}
        self._built: list[Reference] = []
        self._retired: dict[str, str] = {}  # domain -> id of the reference `activate` retired
        self.last: DriftEvaluation | None = None

    # -- the hot path ----------------------------------------------------------
    def observe(self, record, bucket) -> None:
        """Sketch one accepted record into its window bucket (None: not windowed)."""
        domain = record.domain
        layout = self.layouts.get(domain)
        if layout is None:
            numeric, categorical = self._row(record)
            builder = self.builders.get(domain)
            if builder is None:
                builder = self.builders[domain] = self._builder(domain, self.versions.get(domain, ""))
            builder.add(numeric, categorical, record.input_text if self._texts else None,
                        record.timestamp, self._random())
            if builder.full:
                del self.builders[domain]
                reference = builder.build(built_at=record.timestamp, source="auto")
                self.use(reference)
                self._built.append(reference)
                log.info("domain %s: reference built from its first %d records (version %s)",
                         domain, reference.count, reference.version or "-")
            return
        if bucket is None:
            return
        sketch = bucket.drift
        if sketch is None or sketch.reference_id != layout.reference_id:
            sketch = bucket.drift = DriftSketch(layout.reference_id, layout, self._rng)
        elif sketch.layout is None:  # restored from the state store
            sketch.layout, sketch.rng = layout, self._rng
        pending = sketch.pending  # DriftSketch.add, inlined: this runs for every record
        pending.append(self._raw(record))
        if len(pending) >= FOLD_AT:
            sketch.fold()

    # -- references --------------------------------------------------------------
    def _builder(self, domain: str, version: str, limit: int | None = None) -> ReferenceBuilder:
        cfg = self.cfg
        builder = ReferenceBuilder(domain, version, self.features.numeric_names,
                                self.features.categorical_names,
                                limit=limit or cfg.reference_records,
                                sample_size=cfg.reference_sample, bins=cfg.bins,
                                max_categories=cfg.max_categories,
                                texts=cfg.embeddings.reference_texts if self._texts else 0,
                                max_chars=cfg.embeddings.max_chars)
        # What the store must still hold for this build to take over (see Reference.replaces).
        current = self.references.get(domain)
        builder.replaces = current.id if current is not None else self._retired.get(domain)
        return builder

    def builder_for_file(self, domain: str, version: str) -> ReferenceBuilder:
        """A builder without a record limit, for `monitor reference build`."""
        builder = self._builder(domain, version)
        builder.limit = None
        builder.replaces = ANY
        builder.n_texts = self.cfg.embeddings.reference_texts if self.cfg.embeddings.enabled else 0
        return builder

    def use(self, reference: Reference) -> None:
        """Make `reference` the domain's current reference."""
        e = self.cfg.embeddings
        self.references[reference.domain] = reference
        self.versions[reference.domain] = reference.version
        self.layouts[reference.domain] = reference.layout(
            self.features, self.cfg.reservoir_per_bucket,
            e.texts_per_bucket if self._texts else 0, e.max_chars)
        self.builders.pop(reference.domain, None)

    def activate(self, domain: str, version: str, stored: Reference | None = None) -> None:
        """A new version is active for `domain`: use its stored reference, else build one."""
        if stored is not None:
            self.use(stored)
            return
        retired = self.references.pop(domain, None)
        if retired is not None:
            self._retired[domain] = retired.id
        self.layouts.pop(domain, None)
        self.versions[domain] = version
        self.builders[domain] = self._builder(domain, version)

    def take_built(self) -> list[Reference]:
        """References built since the last call (for the state store)."""
        built, self._built = self._built, []
        return built

    # -- evaluation --------------------------------------------------------------
    def evaluate(self, windows, at: float) -> DriftEvaluation:
        """Run every method on every domain with a reference; keep the result as `last`."""
        inputs = []
        for domain, layout in sorted(self.layouts.items()):
            sketches = [b.drift for b in windows.buckets(domain)
                        if b.drift is not None and b.drift.reference_id == layout.reference_id]
            inputs.append(DomainWindow(domain, self.references[domain], layout,
                                       window_profile(sketches, layout)))
        self.last = evaluate(inputs, self.cfg, at, self.embedder)
        return self.last
