"""Drift statistics, one module each, and the decision that combines them.

Importing the package registers every method in `METHODS`.
"""

from monitor.drift import chi2, js, ks, mmd, psi, wasserstein  # noqa: F401  (registrations)
from monitor.drift.methods import (CATEGORICAL, EMBEDDING, METHODS, NUMERIC, DriftMethod, Stat,
                                   methods_for, register)

__all__ = ["CATEGORICAL", "EMBEDDING", "METHODS", "NUMERIC", "DriftMethod", "Stat",
           "methods_for", "register"]
