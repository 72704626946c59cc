import math

import pytest
import torch

from hicom.model.compressor import gather_groups, window_indices


@pytest.mark.parametrize("kernel", [1, 2, 3, 4])
def test_windows_tile_every_length_with_full_groups(kernel):
    for length in range(1, 131):
        w = window_indices(length, kernel)
        assert w.shape[0] == math.ceil(length / kernel), (length, kernel)
        # every window is full: min(kernel, length) consecutive, distinct indices
        assert w.shape[1] == min(kernel, length)
        assert torch.all(w[:, 1:] - w[:, :-1] == 1)
        assert int(w.min()) == 0 and int(w.max()) == length - 1
        assert set(w.flatten().tolist()) == set(range(length)), (length, kernel)


def test_windows_are_contiguous_blocks_when_kernel_divides_length():
    assert window_indices(32, 4).tolist() == [[4 * i + j for j in range(4)] for i in range(8)]
    assert window_indices(27, 3)[:, 0].tolist() == list(range(0, 27, 3))


@pytest.mark.parametrize("length", [5, 6, 9, 10])
def test_uneven_lengths_overlap_minimally_where_the_release_crashes(length):
    w = window_indices(length, 4)
    starts = w[:, 0].tolist()
    assert starts[-1] == length - 4
    overlap = sum(4 for _ in starts) - length
    # total overlap is exactly what ceil(length/4) full windows force, spread over the gaps
    assert overlap == 4 * math.ceil(length / 4) - length
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) - min(gaps) <= 1


def test_window_rejects_nonpositive_sizes():
    with pytest.raises(ValueError, match="length and kernel"):
        window_indices(0, 4)


@pytest.mark.parametrize("kt,ks", [(1, 1), (1, 9), (2, 2), (4, 3), (4, 9)])
def test_gathered_groups_hold_exactly_the_windows_tokens_in_raster_order(kt, ks):
    """gather_groups only reshapes the axes its windows tile exactly; it must give what indexing every group's
    (t, h, w) window one token at a time gives, for tiling and overlapping windows alike."""
    for t, h, w in [(1, 9, 9), (5, 8, 8), (8, 9, 7), (9, 3, 10)]:
        x = torch.randn(2, t, h, w, 3)
        windows = [window_indices(n, k) for n, k in ((t, kt), (h, ks), (w, ks))]
        expected = torch.stack([torch.stack([
            torch.stack([x[b, i, j, k] for i in ti for j in hi for k in wi])
            for ti in windows[0] for hi in windows[1] for wi in windows[2]]) for b in range(2)])
        assert torch.equal(gather_groups(x, windows), expected), (t, h, w)
