"""The stopping rule on learning curves."""

import math

import pytest

from rliv_ray.algorithms.common.convergence import stopping_step


def test_stops_at_the_first_checkpoint_whose_window_is_flat():
    steps = [100, 200, 400, 800, 1600, 3200]
    values = [10.0, 50.0, 90.0, 99.0, 100.0, 100.5]
    # window ending at 1600: 90, 99, 100 -> 10% off; ending at 3200: 99, 100, 100.5 -> 1.5%
    assert stopping_step(steps, values, rel_tol=0.02, patience=2) == 3200
    assert stopping_step(steps, values, rel_tol=0.02, patience=1) == 1600
    assert stopping_step(steps, values, rel_tol=0.10, patience=2) == 1600


def test_a_curve_that_keeps_moving_or_has_gaps_never_stops():
    assert stopping_step([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], rel_tol=0.05) is None
    assert stopping_step([1, 2, 3], [5.0, math.nan, 5.0], patience=2) is None
    assert stopping_step([1, 2, 3], [-5.0, -5.05, -5.0], rel_tol=0.02) == 3  # negative values


def test_bad_curves_are_refused():
    with pytest.raises(ValueError, match="steps"):
        stopping_step([1, 2], [1.0])
    with pytest.raises(ValueError, match="increasing"):
        stopping_step([2, 1], [1.0, 1.0])
    with pytest.raises(ValueError, match="patience"):
        stopping_step([1, 2], [1.0, 1.0], patience=0)
