"""Per-image features: how well the generator re-synthesises an image (inversion), how it looks to a pretrained
network (appearance), and the cache that keeps them on disk."""

from .appearance import appearance_features
from .cache import FeatureCache, FeatureNets, cached_rows, feature_context, features_for
from .inversion import (
    DEGRADATION_FEATURES,
    FeatureBatch,
    FeatureConfig,
    extract_features,
    feature_names,
    is_finite,
)

__all__ = ["DEGRADATION_FEATURES", "FeatureBatch", "FeatureCache", "FeatureConfig", "FeatureNets",
           "appearance_features", "cached_rows", "extract_features", "feature_context", "feature_names", "features_for",
           "is_finite"]
