"""The cluster bootstrap and McNemar's test, on simulated answers whose true accuracy is known."""
import numpy as np
import pytest

from hicom.core.stats import cluster_bootstrap, mcnemar_exact


def simulated(rng, videos, per_video, rate, spread):
    """Answers to `per_video` questions on each video; a video's own accuracy is drawn around `rate` (Beta with
    mean `rate`; small `spread` = strongly correlated questions), so the population accuracy is exactly `rate`."""
    a = rate * (1 / spread - 1)
    b = (1 - rate) * (1 / spread - 1)
    video_rates = rng.beta(a, b, size=videos)
    correct = rng.random((videos, per_video)) < video_rates[:, None]
    return correct.ravel(), np.repeat(np.arange(videos), per_video)


def test_the_95_percent_interval_covers_the_true_rate_in_about_95_percent_of_samples():
    rng = np.random.default_rng(123)
    covered, trials = 0, 300
    for _ in range(trials):
        correct, videos = simulated(rng, videos=80, per_video=4, rate=0.6, spread=0.3)
        low, high = cluster_bootstrap(correct, videos, resamples=500, seed=int(rng.integers(1 << 30)))
        covered += low <= 0.6 <= high
    # a binomial(300, 0.95) count lies in [0.91, 0.985] with probability > 0.99; a bootstrap that ignored the
    # clustering covers about 0.84 here (see the next test), one that was always wide about 1.0
    assert 0.91 <= covered / trials <= 0.985


def test_correlated_questions_on_a_video_give_a_wider_interval_than_independent_questions():
    rng = np.random.default_rng(7)
    correct, videos = simulated(rng, videos=100, per_video=6, rate=0.5, spread=0.4)
    low, high = cluster_bootstrap(correct, videos)
    ind_low, ind_high = cluster_bootstrap(correct, np.arange(len(correct)))  # each question its own cluster
    assert high - low > 1.5 * (ind_high - ind_low)
    assert low < correct.mean() < high and ind_low < correct.mean() < ind_high


def test_same_records_give_the_same_interval_and_order_does_not_matter():
    rng = np.random.default_rng(0)
    correct, videos = simulated(rng, videos=30, per_video=3, rate=0.4, spread=0.2)
    assert cluster_bootstrap(correct, videos) == cluster_bootstrap(correct, videos)
    order = rng.permutation(len(correct))
    assert cluster_bootstrap(correct[order], videos[order]) == pytest.approx(cluster_bootstrap(correct, videos))


def test_weights_give_a_ratio_and_strata_an_unweighted_mean_of_stratum_ratios():
    # all answered questions right, half unanswered: correct/answered is 1 whatever is resampled
    correct = [1, 0] * 20
    answered = [1, 0] * 20
    assert cluster_bootstrap(correct, range(40), weights=answered) == (1.0, 1.0)
    # stratum a always right, stratum b always wrong, b four times as large: the per-stratum mean is 0.5
    values = [1] * 10 + [0] * 40
    strata = ["a"] * 10 + ["b"] * 40
    low, high = cluster_bootstrap(values, range(50), strata=strata)
    assert low == high == 0.5


def test_fewer_than_two_videos_or_nothing_to_divide_by_give_no_interval():
    assert cluster_bootstrap([1, 0, 1], ["v", "v", "v"]) is None
    assert cluster_bootstrap([], []) is None
    assert cluster_bootstrap([0, 0], ["a", "b"], weights=[0, 0]) is None


def test_mismatched_lengths_or_a_bad_confidence_are_errors():
    with pytest.raises(ValueError, match="one entry per question"):
        cluster_bootstrap([1, 0], ["a"])
    with pytest.raises(ValueError, match="confidence must be in"):
        cluster_bootstrap([1, 0], ["a", "b"], confidence=95)


def test_mcnemar_counts_only_the_discordant_pairs():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 * 0.5 ** 10)
