import math

import pytest

from stance_studio.core.intervals import mean_ci, mean_spread, overlap, ratio, ratio_ci
from stance_studio.core.seeds import aggregate


def test_mean_interval_holds_the_mean_and_narrows_with_more_items():
    few = [0, 1] * 5
    many = [0, 1] * 200
    lo, hi = mean_ci(few)
    assert lo <= 0.5 <= hi and hi - lo > 0.3
    lo2, hi2 = mean_ci(many)
    assert lo2 <= 0.5 <= hi2 and hi2 - lo2 < 0.15
    assert mean_ci([1, 1, 1]) == [1.0, 1.0]  # no spread, no width
    assert mean_ci([]) is None and mean_ci([0.3]) == [0.3, 0.3]


def test_ratio_resamples_numerator_and_denominator_together():
    # 1 marker in 10 words, 3 in 10 words: pooled 4 per 20 words = 20 per 100 words
    assert ratio([1, 3], [10, 10], 100.0) == pytest.approx(20.0)
    lo, hi = ratio_ci([1, 3], [10, 10], scale=100.0)
    assert 10.0 <= lo <= 20.0 <= hi <= 30.0
    assert ratio([1], [0]) is None and ratio_ci([1], [0]) is None


def test_mean_and_spread_by_hand():
    mean, spread = mean_spread([1.0, 2.0, 3.0, None])
    assert mean == pytest.approx(2.0) and spread == pytest.approx(1.0)
    assert mean_spread([5.0]) == (5.0, 0.0) and mean_spread([None]) == (None, None)
    assert math.isnan(mean_spread([float("nan"), 1.0])[1]) is False


def test_overlap():
    assert overlap([0, 1], [0.5, 2]) and not overlap([0, 0.2], [0.3, 1]) and overlap(None, [0, 1])


def test_aggregate_over_seeds_by_hand():
    runs = [[{"method": "base", "stance_rate": 0.1}, {"method": "full", "stance_rate": 0.6, "seconds": 10.0}],
            [{"method": "base", "stance_rate": 0.1}, {"method": "full", "stance_rate": 0.8, "seconds": 12.0}],
            [{"method": "base", "stance_rate": 0.1}, {"method": "full", "error": "diverged"}]]
    rows = {r["method"]: r for r in aggregate(runs, "method")}
    full = rows["full"]
    assert full["stance_rate"] == pytest.approx(0.7) and full["stance_rate_spread"] == pytest.approx(0.1414, abs=1e-3)
    assert full["seconds"] == pytest.approx(11.0) and full["seeds"] == 2 and full["failed_seeds"] == 1
    assert rows["base"]["stance_rate_spread"] == pytest.approx(0.0) and rows["base"]["seeds"] == 3
    failed = aggregate([[{"method": "x", "error": "boom"}]], "method")[0]
    assert failed["error"] == "boom" and failed["seeds"] == 0
