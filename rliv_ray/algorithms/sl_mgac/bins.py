"""Distribution discretisation of watch times (sl-mgac.txt Eq. 9-11, EQUATIONS.md 1.11-1.13).

A watch time T in bin k = [L_k, R_k) is stored as the bin and its in-bin proportion

    rho = (T - L_k) / (R_k - L_k) in [0, 1],      T = L_k + rho * (R_k - L_k)      (Eq. 9)

The paper prints 8 boundaries (7 bins) and "a separate bin" for a case lost in extraction, hence
8 RPN outputs (Table 4). ``extra_bin="zero"`` (default, EQUATIONS 1.11) puts T = 0 in a bin of
its own at index 0 with L = R = 0, and clips T above the last boundary to it (rho = 1 in the last
bin). ``extra_bin="overflow"`` puts T = 0 in the first interval and every T >= the last boundary
in a bin of zero width at index n - 1 (reconstructed as the last boundary). A zero-width bin has
no proportion to learn: :meth:`WatchTimeBins.has_width` is the mask of Eq. 11.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LIVE_BOUNDARIES_S = (0.0, 6.0, 15.0, 30.0, 60.0, 100.0, 600.0, 1200.0)  # Table 4, Live-Time DDB
VIDEO_BOUNDARIES_S = (0.0, 3.0, 10.0, 25.0, 50.0, 100.0, 600.0, 1200.0)  # Table 4, Video-Time DDB
EXTRA_BINS = ("zero", "overflow")


@dataclass(frozen=True)
class WatchTimeBins:
    """Bins of a watch time in seconds: the intervals between ``boundaries`` plus one extra bin.

    Index layout (n = len(boundaries) bins in all):
    ``zero``: 0 -> {T = 0}, k = 1..n-1 -> [b_{k-1}, b_k) (the last one closed, T clipped to it).
    ``overflow``: k = 0..n-2 -> [b_k, b_{k+1}), n-1 -> {T >= b_last}.
    """

    boundaries: tuple[float, ...] = LIVE_BOUNDARIES_S
    extra_bin: str = "zero"

    def __post_init__(self) -> None:
        b = tuple(float(x) for x in self.boundaries)
        object.__setattr__(self, "boundaries", b)
        if len(b) < 2:
            raise ValueError(f"bin boundaries need at least 2 values, got {b}")
        if any(hi <= lo for lo, hi in zip(b, b[1:], strict=False)):
            raise ValueError(f"bin boundaries must be strictly increasing: {b}")
        if b[0] != 0.0:
            raise ValueError(f"bin boundaries must start at 0, got {b}")
        if self.extra_bin not in EXTRA_BINS:
            raise ValueError(f"extra_bin must be one of {EXTRA_BINS}, got {self.extra_bin!r}")

    @property
    def n_bins(self) -> int:
        """Intervals plus the extra bin: the RPN's output width per watch time (8 by default)."""
        return len(self.boundaries)

    @property
    def max_seconds(self) -> float:
        return self.boundaries[-1]

    def edges(self, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Left and right edges (n_bins,) of every bin, on ``like``'s device and float dtype."""
        b = list(self.boundaries)
        if self.extra_bin == "zero":
            left, right = [0.0, *b[:-1]], [0.0, *b[1:]]
        else:
            left, right = [*b[:-1], b[-1]], [*b[1:], b[-1]]
        kw = _float_kwargs(like)
        return torch.tensor(left, **kw), torch.tensor(right, **kw)

    def has_width(self, like: torch.Tensor | None = None) -> torch.Tensor:
        """(n_bins,) bool: False for the zero-width extra bin (no proportion to learn)."""
        left, right = self.edges(like)
        return right > left

    def clip(self, seconds: torch.Tensor) -> torch.Tensor:
        """T clamped to [0, last boundary] (the range every bin layout can reconstruct)."""
        return seconds.clamp(min=0.0, max=self.max_seconds)

    def bin_index(self, seconds: torch.Tensor) -> torch.Tensor:
        """The bin holding each T, int64 of T's shape."""
        b = torch.tensor(self.boundaries, **_float_kwargs(seconds))
        t = seconds.to(b.dtype)
        if self.extra_bin == "zero":
            interval = torch.bucketize(self.clip(t), b[1:-1], right=True) + 1  # 1..n-1
            return torch.where(t > 0, interval, torch.zeros_like(interval))
        interval = torch.bucketize(t.clamp(min=0.0), b[1:-1], right=True)  # 0..n-2
        return torch.where(t >= b[-1], torch.full_like(interval, self.n_bins - 1), interval)

    def in_bin_proportion(self, seconds: torch.Tensor) -> torch.Tensor:
        """rho = (T - L_k) / (R_k - L_k) in [0, 1] (Eq. 9); 0 in a zero-width bin."""
        left, right = self.edges(seconds)
        k = self.bin_index(seconds)
        lo, width = left[k], (right - left)[k]
        t = self.clip(seconds.to(left.dtype))
        return torch.where(width > 0, (t - lo) / width.clamp(min=1e-12), torch.zeros_like(t))

    def one_hot(self, seconds: torch.Tensor) -> torch.Tensor:
        """e: the one-hot bin of each T, (..., n_bins) float."""
        k = self.bin_index(seconds)
        return torch.nn.functional.one_hot(k, self.n_bins).to(_float_kwargs(seconds)["dtype"])

    def reconstruct(self, bins: torch.Tensor, rho_hat: torch.Tensor) -> torch.Tensor:
        """T_hat = <e, L> + <e, rho_hat * (R - L)> (Eq. 10).

        ``bins`` is an integer bin index (...), a one-hot e (..., n_bins) or any weights over
        the bins (..., n_bins), e.g. predicted bin probabilities, which give the expectation
        sum_k p_k (L_k + rho_k (R_k - L_k)). ``rho_hat`` is (..., n_bins); returns (...).
        """
        left, right = self.edges(rho_hat)
        per_bin = left + rho_hat * (right - left)  # (..., n_bins)
        if not bins.is_floating_point():
            return per_bin.gather(-1, bins.long().unsqueeze(-1)).squeeze(-1)
        return (bins.to(per_bin.dtype) * per_bin).sum(-1)


def _float_kwargs(like: torch.Tensor | None) -> dict:
    if like is None:
        return {"dtype": torch.get_default_dtype()}
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return {"dtype": dtype, "device": like.device}


LIVE_BINS = WatchTimeBins(LIVE_BOUNDARIES_S)
VIDEO_BINS = WatchTimeBins(VIDEO_BOUNDARIES_S)
