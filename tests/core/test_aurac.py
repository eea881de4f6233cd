import math

import pytest

from mlora_core import aurac


def test_linear_trapezoid_normalised():
    # ranks 1,2,4: area = (1*(0.2+0.4) + 2*(0.4+0.8))/2 = 1.5, width 3
    assert aurac([1, 2, 4], [0.2, 0.4, 0.8]) == pytest.approx(0.5)


def test_log2_form_weights_small_ranks():
    # log2 axis 0,1,2: area = ((0.2+0.4) + (0.4+0.8))/2 = 0.9, width 2
    assert aurac([1, 2, 4], [0.2, 0.4, 0.8], log2=True) == pytest.approx(0.45)


def test_unsorted_input_is_sorted_and_constant_curve_is_its_value():
    assert aurac([4, 1, 2], [0.8, 0.2, 0.4]) == pytest.approx(0.5)
    assert aurac([1, 2, 8, 16], [0.7] * 4, log2=True) == pytest.approx(0.7)


def test_single_rank_is_its_accuracy():
    assert aurac([8], [0.33]) == 0.33 and aurac([8], [0.33], log2=True) == 0.33


@pytest.mark.parametrize("ranks,accs", [([], []), ([1, 2], [0.5]), ([0, 2], [0.1, 0.2]), ([2, 2], [0.1, 0.2])])
def test_bad_input_raises(ranks, accs):
    with pytest.raises(ValueError):
        aurac(ranks, accs)


def test_bounded_by_min_and_max():
    accs = [0.1, 0.9, 0.3, 0.6, 0.2]
    for log2 in (False, True):
        v = aurac([1, 2, 4, 8, 16], accs, log2=log2)
        assert min(accs) <= v <= max(accs) and not math.isnan(v)
