"""Intervals for accuracies and their differences: a cluster bootstrap over videos, and McNemar's exact test.

Questions about one video are correlated (one video misread makes several answers wrong), so the
bootstrap resamples videos with replacement, each bringing all its questions, never single questions;
treating them as independent would give intervals that are too narrow. The seed is fixed, so the same
records always give the same interval. The resampling is vectorised: 2000 resamples of a few thousand
videos take a fraction of a second.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
CHUNK = 2_000_000  # resample-by-video cells drawn at once: bounds memory for large sets
METHOD = f"cluster bootstrap over videos (percentile, {RESAMPLES} resamples, seed {SEED})"


def cluster_bootstrap(values: Sequence[float], clusters: Sequence, *, weights: Sequence[float] | None = None,
                      strata: Sequence | None = None, resamples: int = RESAMPLES, seed: int = SEED,
                      confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The percentile interval of sum(values) / sum(weights) with whole clusters resampled.

    weights: each question's share of the denominator (default 1 each: a plain mean; 0/1 "answered" flags give
    correct-over-answered). strata: when given, the statistic is the unweighted mean over strata of each
    stratum's ratio (a per-task mean), a stratum missing from a resample being left out of that resample's mean.
    None when there are fewer than two clusters (no spread to estimate) or nothing in the denominator.
    """
    values = np.asarray(values, dtype=float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"confidence must be in (0, 1) and resamples at least 1, got {confidence}, {resamples}")
    if not len(values) == len(weights) == len(clusters) or (strata is not None and len(strata) != len(values)):
        raise ValueError("values, weights, clusters (and strata) must have one entry per question")
    cluster_ids = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)[1].ravel()
    stratum_ids = (np.zeros(len(values), dtype=int) if strata is None
                   else np.unique(np.asarray(strata, dtype=str), return_inverse=True)[1].ravel())
    n_clusters = int(cluster_ids.max()) + 1 if len(values) else 0
    if n_clusters < 2 or weights.sum() <= 0:
        return None
    n_strata = int(stratum_ids.max()) + 1
    numerator = np.zeros((n_clusters, n_strata))
    denominator = np.zeros((n_clusters, n_strata))
    np.add.at(numerator, (cluster_ids, stratum_ids), values)
    np.add.at(denominator, (cluster_ids, stratum_ids), weights)
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK // n_clusters)
    estimates = []
    for start in range(0, resamples, rows):
        size = min(rows, resamples - start)
        drawn = rng.integers(0, n_clusters, size=(size, n_clusters))
        counts = np.bincount((drawn + n_clusters * np.arange(size)[:, None]).ravel(),
                             minlength=size * n_clusters).reshape(size, n_clusters)
        top, bottom = counts @ numerator, counts @ denominator
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = np.where(bottom > 0, top / bottom, np.nan)
        estimates.append(np.nanmean(ratios, axis=1) if n_strata > 1 else ratios[:, 0])
    estimates = np.concatenate(estimates)
    estimates = estimates[~np.isnan(estimates)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_exact(new_right_old_wrong: int, new_wrong_old_right: int) -> float:
    """Two-sided exact McNemar p-value (a binomial test on the discordant pairs).

    It treats questions as independent, so it is shown beside the cluster-bootstrap interval, which decides.
    """
    from scipy.stats import binomtest

    discordant = new_right_old_wrong + new_wrong_old_right
    if discordant == 0:
        return 1.0
    return float(binomtest(new_right_old_wrong, discordant, 0.5).pvalue)
