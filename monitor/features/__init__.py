"""Per-record features: the numbers and categories that windows summarise."""

from monitor.features.extract import CATEGORICAL, NUMERIC, FeatureExtractor, Features

__all__ = ["CATEGORICAL", "NUMERIC", "FeatureExtractor", "Features"]
