"""fleet.stats on known numbers: t quantiles, confidence intervals, paired differences, test-split noise."""

from __future__ import annotations

import math

import pytest

from fleet.stats import (
    average_accuracy_se,
    binomial_se,
    fmt_ci,
    mean_ci95,
    paired_diff_ci95,
    t975,
    within_noise,
)


def test_t_quantiles_match_the_table_and_interpolate_between_entries() -> None:
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert 1.980 < t975(80) < 2.000  # between df 60 (2.000) and 120 (1.980)
    assert 1.960 < t975(10_000) < 1.962
    with pytest.raises(ValueError):
        t975(0)


def test_mean_ci95_on_known_numbers() -> None:
    # 1, 2, 3: mean 2, s = 1, half-width = t(2) * 1 / sqrt(3)
    m, h = mean_ci95([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 / math.sqrt(3))
    # 10 values 0..9: mean 4.5, s^2 = 82.5 / 9
    m, h = mean_ci95(list(range(10)))
    assert m == 4.5 and h == pytest.approx(2.262 * math.sqrt(82.5 / 9 / 10))
    m, h = mean_ci95([0.7, 0.7, 0.7])
    assert m == pytest.approx(0.7) and h == pytest.approx(0.0, abs=1e-12)


def test_mean_ci95_degenerate_inputs() -> None:
    m, h = mean_ci95([0.5])
    assert m == 0.5 and math.isnan(h)
    m, h = mean_ci95([])
    assert math.isnan(m) and math.isnan(h)
    assert mean_ci95([1.0, math.nan, 3.0])[0] == 2.0  # non-finite values are left out


def test_paired_difference_and_noise() -> None:
    a, b = [0.80, 0.82, 0.81], [0.70, 0.71, 0.72]  # a consistently 0.1 better: resolvable
    d, h = paired_diff_ci95(a, b)
    assert d == pytest.approx(0.1) and h < 0.05
    assert not within_noise(a, b)
    assert within_noise([0.80, 0.70, 0.75], [0.75, 0.76, 0.74])  # sign flips across seeds
    assert within_noise([0.8], [0.7])  # one seed: no interval, cannot claim a difference
    with pytest.raises(ValueError):
        paired_diff_ci95([1.0], [1.0, 2.0])


def test_test_split_standard_error() -> None:
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert math.isnan(binomial_se(0.5, 0))
    # three tasks, 200 examples each at p = 0.7: about 1.9 points; 600 each: about 1.08 points
    se200 = average_accuracy_se({t: (0.7, 200) for t in "abc"})
    assert se200 == pytest.approx(math.sqrt(3 * 0.21 / 200) / 3)
    assert se200 > 0.018 and average_accuracy_se({t: (0.7, 2000) for t in "abc"}) < 0.01
    assert math.isnan(average_accuracy_se({}))


def test_formatting() -> None:
    assert fmt_ci(0.71234, 0.0123) == "0.712 ± 0.012"
    assert fmt_ci(0.5, math.nan) == "0.500"
    assert fmt_ci(-0.01, 0.02, "+.3f") == "-0.010 ± 0.020"
    assert fmt_ci(math.nan, 0.1) == "n/a"


def _run(acc: float, se_n: int = 3000) -> dict:
    return {"per_task_accuracy": {"a": acc, "b": acc}, "avg_accuracy": acc, "mean_round_latency_s": 1.0,
            "energy_j": 2.0, "budget_j": 3.0, "violation_j": 0.0, "bytes_on_wire": 10, "majority_baseline": {"a": 0.5},
            "rank_counts": {"8": 2}, "ft_decisions": {}, "cumulative_reward": acc,
            "sources": {"accuracy": "measured"}, "test_examples": {"a": se_n, "b": se_n}}


def test_compare_table_marks_noise_and_test_split_size() -> None:
    from fleet.compare import markdown_table, over_seeds
    from fleet.config import FleetConfig, FleetTask

    base = FleetConfig(tasks=[FleetTask(name="a", task_type="sentence"), FleetTask(name="b", task_type="choice")])
    results = {"ours": over_seeds({0: _run(0.80), 1: _run(0.82), 2: _run(0.81)}),
               "clear": over_seeds({0: _run(0.70), 1: _run(0.71), 2: _run(0.72)}),
               "noisy": over_seeds({0: _run(0.90), 1: _run(0.70), 2: _run(0.85)})}
    assert results["ours"]["avg_accuracy"] == pytest.approx(0.81)
    assert results["ours"]["ci95"]["avg_accuracy"] == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    assert results["ours"]["rank_counts"] == {"8": 6}
    table = markdown_table(results, base)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "(within noise)" not in lines["clear"] and "-0.100" in lines["clear"]
    assert "(within noise)" in lines["noisy"]
    assert "resolve 1-point differences" in table and "too small" not in table
    small = {"ours": over_seeds({0: _run(0.8, 50), 1: _run(0.8, 50)})}
    assert "too small to resolve" in markdown_table(small, base)
