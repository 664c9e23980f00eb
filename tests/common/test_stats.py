"""helpers.common.stats: the paired gap, its standard error over items or over groups of items, and bad input."""

import numpy as np
import pytest

from helpers.common.stats import paired_difference


def test_the_paired_gap_and_its_standard_error_over_items():
    a, b = np.array([3.0, 5.0, 4.0, 8.0]), np.array([1.0, 2.0, 2.0, 3.0])
    mean, se = paired_difference(a, b)
    d = a - b  # 2, 3, 2, 5
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx(np.sqrt(((d - 3) ** 2).sum() / 3) / 2)
    shared = np.array([0.0, 10.0, 20.0, 30.0])  # what both share cancels: a large spread, a small error
    assert paired_difference(a + shared, b + shared) == pytest.approx((mean, se))
    assert paired_difference(a, b, groups=np.arange(4)) == pytest.approx((mean, se))  # one item per group: the same


def test_groups_of_equal_size_give_the_standard_error_of_the_group_means():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=12), rng.normal(size=12)
    groups = np.repeat(["duck", "mug", "cube", "bowl"], 3)  # any ids; items of a group need not be adjacent
    order = rng.permutation(12)
    mean, se = paired_difference(a[order], b[order], groups=groups[order])
    group_means = (a - b).reshape(4, 3).mean(1)
    assert mean == pytest.approx((a - b).mean())
    assert se == pytest.approx(group_means.std(ddof=1) / 2)


def test_items_that_share_a_group_do_not_count_as_independent():
    # each group's items agree with each other: 3 copies of 5 gaps are no surer than the 5 gaps
    d = np.array([0.5, -0.2, 0.9, 0.1, 0.4])
    once = paired_difference(d, np.zeros(5))
    thrice = paired_difference(np.repeat(d, 3), np.zeros(15), groups=np.repeat(np.arange(5), 3))
    assert thrice == pytest.approx(once)
    assert paired_difference(np.repeat(d, 3), np.zeros(15))[1] < once[1] / 1.5  # what ignoring the groups claims


def test_bad_input_gets_a_clear_message():
    a = np.zeros(4)
    with pytest.raises(ValueError, match=r"expected two score vectors \(N,\) of one length N ≥ 2, got \(4,\) and "
                                         r"\(3,\)"):
        paired_difference(a, a[:3])
    with pytest.raises(ValueError, match=r"expected one group id per item, shape \(4,\), got \(2,\)"):
        paired_difference(a, a, groups=np.array([0, 1]))
    with pytest.raises(ValueError, match="expected items from at least 2 groups, got 1"):
        paired_difference(a, a, groups=np.zeros(4))
