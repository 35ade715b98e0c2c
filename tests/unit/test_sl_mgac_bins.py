"""SL-MGAC distribution discretisation (Eq. 9-10) against hand values (no Ray)."""

import pytest
import torch

from rliv_ray.algorithms.sl_mgac.bins import LIVE_BINS, VIDEO_BINS, WatchTimeBins

# T (s) -> (bin, rho) for the default live bins [0, 6, 15, 30, 60, 100, 600, 1200] + zero bin.
LIVE_HAND = [
    (0.0, 0, 0.0),  # the zero bin
    (3.0, 1, 0.5),  # [0, 6)
    (6.0, 2, 0.0),  # a left boundary opens the next bin
    (10.5, 2, 0.5),  # [6, 15)
    (100.0, 6, 0.0),  # [100, 600)
    (900.0, 7, 0.5),  # [600, 1200]
    (1200.0, 7, 1.0),  # the last boundary closes the last bin
    (5000.0, 7, 1.0),  # clipped to 1200
]


def test_default_layout_is_eight_bins_with_a_zero_bin():
    left, right = LIVE_BINS.edges()
    assert LIVE_BINS.n_bins == VIDEO_BINS.n_bins == 8
    assert left.tolist() == [0, 0, 6, 15, 30, 60, 100, 600]
    assert right.tolist() == [0, 6, 15, 30, 60, 100, 600, 1200]
    assert LIVE_BINS.has_width().tolist() == [False] + [True] * 7
    assert VIDEO_BINS.edges()[1].tolist() == [0, 3, 10, 25, 50, 100, 600, 1200]


@pytest.mark.parametrize(("seconds", "index", "rho"), LIVE_HAND)
def test_bin_index_and_proportion_by_hand(seconds, index, rho):
    t = torch.tensor([seconds])
    assert LIVE_BINS.bin_index(t).item() == index
    assert LIVE_BINS.in_bin_proportion(t).item() == pytest.approx(rho)
    assert LIVE_BINS.one_hot(t)[0].argmax().item() == index


def test_reconstruction_round_trip_from_index_and_one_hot():
    t = torch.tensor([s for s, _, _ in LIVE_HAND])
    rho = LIVE_BINS.in_bin_proportion(t).unsqueeze(-1).expand(-1, 8)  # rho in every bin slot
    expected = t.clamp(max=1200.0)
    torch.testing.assert_close(LIVE_BINS.reconstruct(LIVE_BINS.bin_index(t), rho), expected)
    torch.testing.assert_close(LIVE_BINS.reconstruct(LIVE_BINS.one_hot(t), rho), expected)


def test_reconstruction_with_bin_weights_is_the_expectation():
    rho = torch.full((8,), 0.5)
    weights = torch.zeros(8)
    weights[1], weights[7] = 0.75, 0.25  # 3 s (bin [0, 6)) and 900 s (bin [600, 1200])
    assert LIVE_BINS.reconstruct(weights, rho).item() == pytest.approx(0.75 * 3 + 0.25 * 900)


def test_overflow_layout_puts_zero_in_the_first_bin_and_clips_above():
    bins = WatchTimeBins(extra_bin="overflow")
    t = torch.tensor([0.0, 3.0, 1199.0, 1200.0, 5000.0])
    assert bins.bin_index(t).tolist() == [0, 0, 6, 7, 7]
    torch.testing.assert_close(bins.in_bin_proportion(t),
                               torch.tensor([0.0, 0.5, 599 / 600, 0.0, 0.0]))
    rho = torch.rand(5, 8)
    torch.testing.assert_close(bins.reconstruct(bins.bin_index(t)[2:], rho[2:])[1:],
                               torch.tensor([1200.0, 1200.0]))
    assert bins.has_width().tolist() == [True] * 7 + [False]


def test_works_on_batches_of_any_shape_and_integer_seconds():
    t = torch.tensor([[0, 7], [20, 2000]])
    assert VIDEO_BINS.bin_index(t).tolist() == [[0, 2], [3, 7]]
    assert VIDEO_BINS.one_hot(t).shape == (2, 2, 8)
    assert VIDEO_BINS.in_bin_proportion(t).dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"boundaries": (0, 6, 6, 15)}, "strictly increasing: \\(0.0, 6.0, 6.0, 15.0\\)"),
     ({"boundaries": (0, 10, 5)}, "strictly increasing"),
     ({"boundaries": (1, 6, 15)}, "must start at 0"),
     ({"boundaries": (0,)}, "at least 2"),
     ({"extra_bin": "tail"}, "extra_bin must be one of")],
)
def test_invalid_bins_raise_a_named_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WatchTimeBins(**kwargs)
