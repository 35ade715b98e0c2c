"""SL-MGAC's network in plain torch (sl-mgac.txt Fig. 2, Eq. 6-13; EQUATIONS.md 1.7-1.13).

    e_u = W_u [x_user; x_session],  e_s = W_s x_live + E_live[live_id],  q = [e_u; e_s]
    h^l = sum_j alpha^l_j e^l_j,  alpha^l = softmax_j g_l(q, e^l_j)      (Eq. 6, DIN-style g)
    h   = MLP_[256,128]([e_u; e_s; h^l; h^v])                            shared by all heads
    actor:     pi(.|s) = softmax(f_theta(LN(sg(h)), g))                   (B, 2)
    critic i:  rho^l_i = sigma(f^l_psi_i(LN_i(h), g)), rho^v_i likewise   (B, 8) each (Eq. 10)
               T_xi_i(s, .) = f_xi_i(LN_i(h), g)                          (B, 2)     (Eq. 8)

x_session = [log1p(session index), log1p(gap to the previous request in s)] places the request
in the user's sessions (``live_samples``; ``session_state=False`` drops it, as before issue 13).

Every f(z, g) is a multi-group network (MGN): K towers, f(z, g) = sum_k 1[g = k] MLP_k(z);
the towers of all critics are one :class:`BatchedMLP`, each run on its group's rows only.

Output layout. The reward R(s, a) = a (T^l - beta T^v / n) is 0 at a = 0 and only its a = 1
value is predicted, so the RPN has no action axis: per critic and watch time it gives n = 8
proportions, one per bin (Table 4's [.., 8]); which bin is read is a property of the row (the
stored bin of the observed time, ``bin_source="logged"``) or predicted by 8 more logits
(``bin_source="predicted"``, output width 16). The QRN gives T(s, a) for both actions (2) and
the actor two logits. w/o DD the RPN gives the scaled watch time, reward_scale * seconds
(width 1); w/o SL there is no RPN and the QRN's two outputs are Q itself. Q = R + gamma T is
assembled by the objective. ``value_head`` adds V(s) (B,), an MGN on LN_v(h) (IQL, Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rliv_ray.algorithms.common.blocks import BatchedMLP, HashedEmbedding
from rliv_ray.algorithms.sl_mgac.attention import TargetAttention
from rliv_ray.algorithms.sl_mgac.bins import LIVE_BINS, VIDEO_BINS, WatchTimeBins

LIVE_SALT, VIDEO_SALT = 11, 12
N_ACTIONS = 2
SESSION_WIDTH = 2
"""Session state inputs: log1p session index, log1p gap (``schema.SESSION_STATE_COLUMNS``)."""
MG_MODES = ("towers", "group_embedding")
BIN_SOURCES = ("logged", "predicted")
VIDEO_TIMES = ("request", "per_video")
RHO_ACTIVATIONS = ("sigmoid", "clamp")


@dataclass(frozen=True)
class SLMGACSpec:
    """Shapes and switches of the SL-MGAC network (defaults: paper section 4.3 and Table 4).

    Table 2 ablations here: w/o MG (``multi_group=False``), w/o MG&DD (+ ``discretise=False``),
    w/o MG&DD&SL (+ ``supervised_split=False``), w/o LN (``layer_norm=False``), w/o SG
    (``stop_gradient=False``). w/o Q-norm, -0 (gamma = 0), -sep and -vanilla change the loss,
    not the network: they are fields of ``objective.SLMGACSettings``; ``variants.variant``
    maps every name of Tables 1-2 to both.
    """

    user_dim: int
    """Width of ``user_features``."""
    live_dim: int
    """Width of ``live_features``."""
    session_state: bool = True
    """The user tower also reads the session state (``schema.SESSION_STATE_COLUMNS``: log1p
    session index and log1p gap since the previous request), so the state can tell a request
    that opens a session from one deep inside it; False: user features only (before issue 13)."""
    groups: int = 6
    """K user groups by past live watch time (Table 4)."""
    multi_group: bool = True
    """MG-SD in every head; False is w/o MG (one tower, the group is not seen)."""
    mg_mode: str = "towers"
    """``towers``: K MLPs, the group picks one; ``group_embedding``: one MLP sees [z; E_g]."""
    discretise: bool = True
    """RPN predicts in-bin proportions (Eq. 9-11); False is w/o DD (regresses the scaled T)."""
    supervised_split: bool = True
    """Q = R_psi + gamma T_xi (Eq. 8); False is w/o SL (the QRN outputs Q, no RPN)."""
    layer_norm: bool = True
    """LayerNorm on the input of the actor and of every critic; False is w/o LN."""
    stop_gradient: bool = True
    """The actor sees sg(h); False is w/o SG."""
    n_critics: int = 2
    """Clipped double Q (Eq. 7)."""
    id_buckets: int = 5000
    """The "5000-size embedding layer" (section 4.3): hash buckets per id table."""
    embedding_dim: int = 16
    """[I] not reported."""
    attention_hidden: tuple[int, ...] = (32,)
    """Hidden sizes of the DIN score FFN g over [q, e, q*e, q-e] [I]."""
    attention_softmax: bool = True
    """Normalise the scores with a softmax over the history (line 63) [I]; False: DIN's raw."""
    shared_hidden: tuple[int, ...] = (256, 128)
    actor_hidden: tuple[int, ...] = (64, 32)
    """Table 4 prints [128, 63, 31, 2]: input 128, read as hidden [64, 32] (EQUATIONS 1.8)."""
    rpn_hidden: tuple[int, ...] = (64, 32)
    qrn_hidden: tuple[int, ...] = (64, 32)
    live_bins: WatchTimeBins = LIVE_BINS
    video_bins: WatchTimeBins = VIDEO_BINS
    bin_source: str = "predicted"
    """Bins R_psi reads: ``predicted`` (8 more logits per time, R = sum_k p_k (L_k + rho_k (R_k -
    L_k)), EQUATIONS 1.12's bin-probability head) or ``logged``, the one-hot of the observed
    time (Eq. 10 as written). With ``logged`` the live bin at a = 0 rows is the zero bin, so
    R(s, 1) = -beta T_hat^v / n on the ~80% of rows the logging policy did not inject, and the
    actor learns to under-inject: on the live world SL-MGAC-sep gains ~40 per user with
    ``predicted`` (benchmarks/RESULTS.md). Used with discretise."""
    video_time: str = "request"
    """Video bins hold T^v of the request (``request``) or T^v / n (``per_video``) [I]."""
    rho_activation: str = "sigmoid"
    """rho_hat = sigmoid(out) (EQUATIONS 1.12 [I]) or clamp(out, 0, 1)."""
    value_head: bool = False
    """A state-value head V(s) (B,) beside the critics (``qrn_hidden``): IQL's V (Table 1)."""
    bcq_threshold: float = 0.3
    """BCQ (Table 1): a is allowed iff G(a|s) / max_a' G(a'|s) > this. A spec field, not a
    loss setting, because the serving rule reads it and the policy file saves the spec."""

    def __post_init__(self) -> None:
        for name in ("user_dim", "live_dim", "groups", "n_critics", "id_buckets",
                     "embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("attention_hidden", "shared_hidden", "actor_hidden", "rpn_hidden",
                     "qrn_hidden"):
            sizes = tuple(getattr(self, name))
            if (name == "shared_hidden" and not sizes) or any(s < 1 for s in sizes):
                raise ValueError(f"{name} must hold positive layer sizes, got {sizes}")
            object.__setattr__(self, name, sizes)
        if not 0.0 <= self.bcq_threshold < 1.0:
            raise ValueError(f"bcq_threshold must be in [0, 1), got {self.bcq_threshold}")
        for name, allowed in (("mg_mode", MG_MODES), ("bin_source", BIN_SOURCES),
                              ("video_time", VIDEO_TIMES),
                              ("rho_activation", RHO_ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def tower_groups(self) -> int:
        """Towers per MGN: K in ``towers`` mode with MG, else 1."""
        return self.groups if self.multi_group and self.mg_mode == "towers" else 1

    def rpn_width(self, bins: WatchTimeBins) -> int:
        """Outputs of one RPN MGN: n proportions (+ n bin logits), or 1 (seconds) w/o DD."""
        if not self.discretise:
            return 1
        return bins.n_bins * (2 if self.bin_source == "predicted" else 1)


MIN_SLOT_ROWS = 128
"""Slots hold at least this many rows (or the largest group's count, if smaller): smaller
slots leave less padding but make the batched matmuls less efficient."""


def slot_rows(counts: list[int], min_rows: int) -> int:
    """Rows R per slot that minimise the padded rows R * sum_k ceil(c_k / R) of a batch whose
    groups have ``counts`` rows, for R at or above ``low = min(min_rows, max_k c_k)``.

    Between the R where some group fills m slots exactly (R = ceil(c_k / m)) the slot counts
    are constant and the cost grows with R, so those R and ``low`` are the only candidates;
    of equal costs the largest R (fewest slots) is taken.
    """
    largest = max(max(counts), 1)
    low = min(min_rows, largest)
    candidates = {-(-c // m) for c in counts for m in range(1, c // low + 1)} | {low, largest}
    return min((rows for rows in candidates if rows >= low),
               key=lambda rows: (rows * sum(-(-c // rows) for c in counts), -rows))


class GroupGrid:
    """The rows of a batch laid out by group in S slots of R rows each (a (S, R) grid).

    Each slot belongs to one group (``slot_group``): group k fills ceil(c_k / R) slots with
    its c_k rows, R chosen by :func:`slot_rows` so little is padding, and a group without rows
    gets none. A K-tower MGN then runs on each slot the tower of that slot's group: one
    batched matmul per layer over S * R rows instead of K * B (every tower on every row).
    Slots past a group's rows are padding (they hold batch row 0; their outputs are never
    read).
    """

    def __init__(self, group: torch.Tensor, groups: int, min_rows: int | None = None):
        group = group.long()  # (B,)
        order = torch.argsort(group, stable=True)  # (B,) batch rows sorted by group
        counts = torch.bincount(group, minlength=groups)  # (K,)
        self.groups = groups
        self.rows = slot_rows(counts.tolist(), MIN_SLOT_ROWS if min_rows is None else min_rows)
        slots = -(-counts // self.rows)  # (K,) slots per group
        self.slot_group = torch.repeat_interleave(torch.arange(groups, device=group.device),
                                                  slots)  # (S,)
        self.slots = self.slot_group.shape[0]
        first = torch.cumsum(counts, 0) - counts  # (K,) sorted position of each group's first
        first_slot = torch.cumsum(slots, 0) - slots  # (K,)
        sorted_group = group[order]
        rank = torch.arange(group.shape[0], device=group.device) - first[sorted_group]
        self.slot = torch.empty_like(order)  # (B,) the grid position of each batch row
        self.slot[order] = first_slot[sorted_group] * self.rows + rank
        self.source = torch.zeros(self.slots * self.rows, dtype=torch.long,
                                  device=group.device)
        self.source[self.slot] = torch.arange(group.shape[0], device=group.device)

    def towers(self, networks: int) -> torch.Tensor:
        """(N * S,) the tower n * K + k that network n runs on each slot of group k."""
        base = torch.arange(networks, device=self.slot_group.device) * self.groups
        return (base.unsqueeze(1) + self.slot_group).reshape(-1)

    def to_grid(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(..., B, ...) -> (..., S * R, ...) along ``dim``."""
        return x.index_select(dim, self.source)

    def to_rows(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """(..., S * R, ...) -> (..., B, ...) along ``dim``."""
        return x.index_select(dim, self.slot)


class MultiGroupNetwork(nn.Module):
    """N networks, each an MGN f_n(z, g) = sum_k 1[g = k] MLP_{n,k}(z) (EQUATIONS 1.8).

    ``towers`` mode keeps the N*K towers as one :class:`BatchedMLP` (tower n * K + k) and runs
    each on its group's rows only (:class:`GroupGrid`); ``group_embedding`` runs N MLPs on
    [z; E_n[g]]; ``single`` (w/o MG) N MLPs on z.
    """

    def __init__(self, networks: int, in_features: int, hidden: tuple[int, ...],
                 out_features: int, groups: int, mode: str, group_dim: int):
        super().__init__()
        self.networks, self.groups, self.mode = networks, groups, mode
        towers = groups if mode == "towers" else 1
        extra = group_dim if mode == "group_embedding" else 0
        self.mlp = BatchedMLP(networks * towers, in_features + extra, hidden, out_features)
        self.group_embedding = (nn.Parameter(torch.randn(networks, groups, group_dim))
                                if mode == "group_embedding" else None)  # nn.Embedding's init

    def forward(self, z: torch.Tensor, group: torch.Tensor,
                grid: GroupGrid | None = None) -> torch.Tensor:
        """z (N, B, D) one input per network, group (B,) in [0, K) -> (N, B, out).

        In ``towers`` mode with a ``grid``, z is already in its layout, (N, S * R, D), and so
        is the output, (N, S * R, out).
        """
        if self.mode == "towers":
            if grid is None:
                grid = GroupGrid(group, self.groups)
                return grid.to_rows(self(grid.to_grid(z, 1), group, grid), 1)
            n = z.shape[0]
            out = self.mlp(z.reshape(n * grid.slots, grid.rows, z.shape[-1]), grid.towers(n))
            return out.view(n, grid.slots * grid.rows, -1)
        if self.mode == "group_embedding":
            z = torch.cat([z, self.group_embedding[:, group.long()]], dim=-1)
        return self.mlp(z)


@dataclass(frozen=True)
class TimeHead:
    """One watch time's RPN outputs for the C critics (exactly one of rho / seconds is set)."""

    rho: torch.Tensor | None  # (C, B, n) in [0, 1], with discretise
    bin_logits: torch.Tensor | None  # (C, B, n), with bin_source="predicted"
    seconds: torch.Tensor | None  # (C, B) w/o DD: the scaled watch time (objective.rpn_loss)

    def predicted_seconds(self, bins: WatchTimeBins,
                          observed: torch.Tensor | None = None) -> torch.Tensor:
        """T_hat (C, B): the stored bin of ``observed`` (B,) or the predicted bins (Eq. 10).

        Predicted bin probabilities stand in for the stored one-hot e, which is data: they are
        detached here and learn from their cross-entropy only (else the actor loss, through an
        attached Q_tilde, rewrites them and the policy collapses to always inject).
        """
        if self.seconds is not None:
            return self.seconds
        if self.bin_logits is not None:
            return bins.reconstruct(torch.softmax(self.bin_logits.detach(), dim=-1), self.rho)
        if observed is None:
            raise ValueError("bin_source='logged' needs the observed watch time of the row")
        return bins.reconstruct(bins.one_hot(observed), self.rho)


@dataclass(frozen=True)
class Outputs:
    """Network outputs for a batch of B requests (a part not asked for is None)."""

    logits: torch.Tensor | None  # (B, 2) actor logits
    residual: torch.Tensor | None  # (C, B, 2): T_xi(s, a), or Q itself w/o SL
    live: TimeHead | None  # None w/o SL
    video: TimeHead | None
    value: torch.Tensor | None = None  # (B,) V(s), with spec.value_head (IQL)


LOOKUP_IDS = 1 << 17
"""Ids in [-1, LOOKUP_IDS) find their hash bucket in a table (1 MB) built once per id table."""
_BUCKETS: dict[tuple, torch.Tensor] = {}


def bucket_of(table: HashedEmbedding, ids: torch.Tensor) -> torch.Tensor:
    """``table.rows(ids)``: the row of each id in ``table``, looked up (about 3x faster than
    hashing a 50-id history) when every id is in [-1, LOOKUP_IDS)."""
    low, high = torch.aminmax(ids)
    if low < -1 or high >= LOOKUP_IDS:
        return table.rows(ids)
    key = (table.buckets, table.salt, ids.device)
    if key not in _BUCKETS:
        _BUCKETS[key] = table.rows(torch.arange(-1, LOOKUP_IDS, device=ids.device))
    return _BUCKETS[key].index_select(0, ids.reshape(-1) + 1).view(ids.shape)


class SLMGACNetwork(nn.Module):
    """The shared feature extractor, the actor MGN and C critics (live/video RPN + QRN MGNs)."""

    def __init__(self, spec: SLMGACSpec):
        super().__init__()
        self.spec = spec
        d = spec.embedding_dim
        self.user_proj = nn.Linear(spec.user_dim + SESSION_WIDTH * spec.session_state, d)
        self.live_proj = nn.Linear(spec.live_dim, d)
        self.live_ids = HashedEmbedding(spec.id_buckets, d, salt=LIVE_SALT)
        self.video_ids = HashedEmbedding(spec.id_buckets, d, salt=VIDEO_SALT)
        self.live_attention = TargetAttention(2 * d, d, spec.attention_hidden,
                                              spec.attention_softmax)
        self.video_attention = TargetAttention(2 * d, d, spec.attention_hidden,
                                               spec.attention_softmax)
        layers, width = [], 4 * d
        for size in spec.shared_hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.shared = nn.Sequential(*layers)
        norm = (lambda: nn.LayerNorm(width)) if spec.layer_norm else nn.Identity
        self.actor_norm = norm()
        self.critic_norms = nn.ModuleList(norm() for _ in range(spec.n_critics))
        mode = spec.mg_mode if spec.multi_group else "single"

        def mgn(networks: int, hidden: tuple[int, ...], out: int) -> MultiGroupNetwork:
            return MultiGroupNetwork(networks, width, hidden, out, spec.groups, mode, d)

        c = spec.n_critics
        self.actor = mgn(1, spec.actor_hidden, N_ACTIONS)
        self.qrn = mgn(c, spec.qrn_hidden, N_ACTIONS)
        self.rpn_live = (mgn(c, spec.rpn_hidden, spec.rpn_width(spec.live_bins))
                         if spec.supervised_split else None)
        self.rpn_video = (mgn(c, spec.rpn_hidden, spec.rpn_width(spec.video_bins))
                          if spec.supervised_split else None)
        self.value_norm = norm() if spec.value_head else None
        self.value = mgn(1, spec.qrn_hidden, 1) if spec.value_head else None

    def _ids(self, table: HashedEmbedding, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of ids (...,) -> (..., d), zero where id < 0 (padding / no live)."""
        keep = (ids >= 0).unsqueeze(-1)
        return table(ids.clamp(min=0)) * keep

    @staticmethod
    def _history(attention: TargetAttention, q: torch.Tensor, table: HashedEmbedding,
                 history: torch.Tensor) -> torch.Tensor:
        """h (B, d) over a history of ids (B, L); padding (id < 0) gets weight 0."""
        return attention.attend(q, table.table.weight, bucket_of(table, history), history >= 0)

    def features(self, user_features: torch.Tensor, live_features: torch.Tensor,
                 live_id: torch.Tensor, live_history: torch.Tensor,
                 video_history: torch.Tensor,
                 session: torch.Tensor | None = None) -> torch.Tensor:
        """h = MLP([e_u; e_s; h^l; h^v]) (B, shared_hidden[-1]) (section 3.1); ``session``
        (B, 2) is required with ``spec.session_state``."""
        x_user = user_features.float()
        if self.spec.session_state:
            if session is None:
                raise ValueError("the network reads the session state (session_state=True): "
                                 "pass session (B, 2), e.g. from live_samples' columns")
            x_user = torch.cat([x_user, session.float()], dim=-1)
        e_u = self.user_proj(x_user)  # (B, d)
        e_s = self.live_proj(live_features.float()) + self._ids(self.live_ids, live_id)
        q = torch.cat([e_u, e_s], dim=-1)  # (B, 2d)
        h_l = self._history(self.live_attention, q, self.live_ids, live_history)
        h_v = self._history(self.video_attention, q, self.video_ids, video_history)
        return self.shared(torch.cat([e_u, e_s, h_l, h_v], dim=-1))

    def forward(self, user_features: torch.Tensor, live_features: torch.Tensor,
                live_id: torch.Tensor, live_history: torch.Tensor, video_history: torch.Tensor,
                user_group: torch.Tensor, *, session: torch.Tensor | None = None,
                actor: bool = True, critics: bool = True) -> Outputs:
        h = self.features(user_features, live_features, live_id, live_history, video_history,
                          session)
        grid = GroupGrid(user_group, self.spec.groups) if self.spec.tower_groups > 1 else None
        if grid is not None:  # LayerNorm is per row: it commutes with the grid layout
            h = grid.to_grid(h, 0)  # (S * R, D)

        def heads(mgn: MultiGroupNetwork, z: torch.Tensor) -> torch.Tensor:
            out = mgn(z, user_group, grid)
            return out if grid is None else grid.to_rows(out, 1)

        logits = residual = live = video = value = None
        if actor:
            z = self.actor_norm(h.detach() if self.spec.stop_gradient else h)
            logits = heads(self.actor, z.unsqueeze(0))[0]
        if critics:
            z = torch.stack([norm(h) for norm in self.critic_norms])  # (C, B, D)
            residual = heads(self.qrn, z)
            if self.rpn_live is not None:
                live = self._time_head(heads(self.rpn_live, z), self.spec.live_bins)
                video = self._time_head(heads(self.rpn_video, z), self.spec.video_bins)
            if self.value is not None:
                value = heads(self.value, self.value_norm(h).unsqueeze(0))[0, :, 0]
        return Outputs(logits, residual, live, video, value)

    def _time_head(self, raw: torch.Tensor, bins: WatchTimeBins) -> TimeHead:
        if not self.spec.discretise:
            return TimeHead(None, None, raw.squeeze(-1))
        n = bins.n_bins
        rho = (torch.sigmoid(raw[..., :n]) if self.spec.rho_activation == "sigmoid"
               else raw[..., :n].clamp(0.0, 1.0))
        logits = raw[..., n:] if self.spec.bin_source == "predicted" else None
        return TimeHead(rho, logits, None)

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The id tables: the "embedding layer" trained at its own learning rate (4.3)."""
        return [self.live_ids.table.weight, self.video_ids.table.weight]

    def param_groups(self, lr: float, embedding_lr: float) -> list[dict]:
        """Adam parameter groups: id tables at ``embedding_lr`` (1e-5), the rest at ``lr``."""
        emb = {id(p) for p in self.embedding_parameters()}
        rest = [p for p in self.parameters() if id(p) not in emb]
        return [{"params": self.embedding_parameters(), "lr": embedding_lr},
                {"params": rest, "lr": lr}]
