"""One SL-MGAC training objective on a batch of tensors (sl-mgac.txt Eq. 5-17).

:func:`sl_mgac_loss` is what the RLlib learner's ``compute_loss_for_module`` will call: it reads
the columns of the live-stream allocation samples (``schema``'s last block, the next request's
columns under ``schema.next_column``), runs the online and target networks and sums Eq. 15.
:func:`act` is the epsilon-greedy serving rule (Eq. 16). Plain torch, tested without Ray.

    r_t    = scale * a_t (T^l_t - beta T^v_t / n_t)                           (Eq. 5)
    Q_i    = sg(R_psi_i) + gamma T_xi_i            (Eq. 8; sg only in the TD term, EQUATIONS 1.10)
    R_psi  = scale * a (T_hat^l - beta T_hat^v / n)                           (Eq. 10)
    y_t    = r_t + d_t (1 - done) V'(s_{t+1})      (Eq. 7 / 17, ``target_mode``)
    L      = sum_i Huber_delta(Q_i(s_t, a_t) - y_t) + L_RPN + L_pi            (Eq. 15)

d_t is the per-transition discount (``discount``): gamma on every transition (``request``,
Eq. 2), or gamma only where the next request opens a new session and 1 within a session
(``session``: a session's requests count alike, the future is discounted per visit; the
samples' ``next_new_session`` column says which). ``done`` comes from the samples
(``live_samples`` ``terminal``). delta = ``huber_delta_s * reward_scale``: the Huber zone is set
in seconds of reward, so it covers the same watch times whatever the reward scale.

Rows whose ``live_id`` is -1 (no live stream on air) have no decision: a = 1 is infeasible at
s (the actor loss skips them, :func:`act` never injects) and at s' (the target's max and the
vanilla expectation use a' = 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rliv_ray import schema as S
from rliv_ray.algorithms.sl_mgac import losses as L
from rliv_ray.algorithms.sl_mgac.network import Outputs, SLMGACNetwork, SLMGACSpec

DONE = S.DONE
STATE_COLUMNS = (S.USER_FEATURES, S.LIVE_FEATURES, S.LIVE_ID, S.LIVE_HISTORY, S.VIDEO_HISTORY,
                 S.USER_GROUP)  # in the order of SLMGACNetwork.forward's arguments
SESSION_COLUMNS = S.SESSION_STATE_COLUMNS  # the forward's ``session`` (B, 2), with session_state
DISCOUNTS = ("request", "session")
OUTCOME_COLUMNS = (S.LIVE_WATCH_S, S.VIDEO_WATCH_S, S.N_VIDEOS)
TARGET_UPDATES = ("polyak", "hard")
EPSILON = 0.2  # "Online Exploration 0.2" (Table 4)


@dataclass(frozen=True)
class SLMGACSettings:
    """Loss and training settings (defaults: paper section 4.3, Table 4, EQUATIONS.md 1.5-1.17).

    Table 2 / Table 1 variants here: w/o Q-norm (``q_norm=False``, Q detached), SL-MGAC-0
    (``gamma=0``), -sep (``detach_q_in_actor=True``), -vanilla (``target_mode="vanilla"``).
    """

    gamma: float = 0.9
    discount: str = "request"
    """Per-transition discount: ``request`` (gamma on every transition, Eq. 2) or ``session``
    (gamma where the next request starts a new session, 1 within a session). Q = R + gamma T
    keeps gamma either way: it only reparametrises T (gamma T learns d_t V')."""
    beta: float = 0.5
    """Implicit cost weight of Eq. 5 (not reported; ~lambda / (1 + lambda), tune the ratio)."""
    reward_scale: float = 0.01
    """r and R_psi are multiplied by it (line 88's "normalized" reward) [I]; sets Q_tilde's
    sharpness together with ``q_temperature``. It does not move the Huber zone, which is set in
    seconds (``huber_delta_s``)."""
    huber_delta_s: float = 1200.0
    """delta of the TD Huber loss (every method) and of w/o DD's watch-time loss, in seconds of
    reward: the losses use ``huber_delta_s * reward_scale`` (:attr:`td_huber_delta`), so the
    pair stays consistent. delta is not given [I]; 1200 s, the last bin boundary that r_t is
    clipped at, keeps every reward-sized error quadratic (the loss estimates a mean, not the
    median of the heavy-tailed watch time: with delta = 1 at scale 0.01, errors over 100 s were
    linear, and those rows carry most of the live watch time)."""
    rho_huber_delta: float = 1.0
    """delta of Eq. 11's Huber on in-bin proportions (in [0, 1]: quadratic at 1) [I]."""
    clip_watch_time: bool = True
    """Clip T^l, T^v (or T^v / n) at the last bin boundary in r_t too, so r and R_psi share a
    range (EQUATIONS 1.11)."""
    target_mode: str = "max_min"
    """``max_min`` (Eq. 7), ``double_dqn``, ``logged_next`` or ``vanilla`` (Eq. 17)."""
    qrn_gamma_scale: bool = True
    """Q = R + gamma T (RLIV-UA Eq. 13); False: Q = R + T (EQUATIONS 1.10)."""
    detach_rpn_in_td: bool = True
    """sg(R_psi) in the TD term: the RPN learns from Eq. 11 only."""
    actor_loss: str = "soft_ce"
    """Eq. 13 reading: ``soft_ce`` (-sum_a Q_tilde(s, a) log pi(a|s), the "standard cross-
    entropy" of line 101) or ``awac_sampled`` (Q_tilde at the logged action only; on states
    that never repeat it degenerates to behaviour cloning, benchmarks/RESULTS.md)."""
    q_norm: bool = True
    """Q_tilde = softmax(Q / T) in the actor loss (Eq. 13); False is w/o Q-norm."""
    plain_actor_loss: str = "expected_q"
    """Without Q-norm: ``expected_q`` (Eq. 12) or ``raw_q`` (Eq. 13's form with raw Q)."""
    q_temperature: float = 1.0
    detach_q_in_actor: bool = False
    """True is SL-MGAC-sep: the actor loss gives the critics no gradient (EQUATIONS 1.14)."""
    rpn_weight: float = 1.0
    """Weight of L_RPN in Eq. 15 (unweighted in the paper)."""
    actor_weight: float = 1.0
    """Weight of L_pi in Eq. 15 (unweighted in the paper)."""
    target_update: str = "polyak"
    """``polyak`` (tau each step, RLIV-UA's value) or ``hard`` (copy every N steps)."""
    tau: float = 0.005
    hard_update_every: int = 1000
    epsilon: float = EPSILON
    """Maximal exploration probability of Eq. 16."""
    lr: float = 1e-3
    embedding_lr: float = 1e-5
    # Table 1 offline-RL baselines (``offline_baselines``); SL-MGAC ignores these.
    bcq_logit_reg: float = 0.01
    """BCQ: weight of the mean squared logits of G(a|s) (Fujimoto et al. 2019's code: 1e-2)."""
    sac_alpha: float = 0.2
    """SAC: fixed entropy temperature alpha (ours; Christodoulou 2019 tunes it)."""
    gumbel_temperature: float = 1.0
    """TD3, TD3-BC: temperature of the straight-through Gumbel-softmax's backward pass."""
    td3_policy_delay: int = 2
    """TD3, TD3-BC: the actor learns every d-th update (Fujimoto et al. 2018: d = 2)."""
    td3_bc_alpha: float = 2.5
    """TD3-BC: alpha of lambda = alpha / mean|Q| (Fujimoto & Gu 2021)."""
    iql_expectile: float = 0.7
    """IQL: expectile tau of V(s) over Q(s, a) (Kostrikov et al. 2022)."""
    iql_beta: float = 3.0
    """IQL: inverse temperature of the advantage weights exp(beta (Q - V))."""
    iql_max_weight: float = 100.0
    """IQL: the advantage weights are clipped at this value (IQL's code: 100)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not 0.0 < self.iql_expectile < 1.0:
            raise ValueError(f"iql_expectile must be in (0, 1), got {self.iql_expectile}")
        for name in ("beta", "rpn_weight", "actor_weight", "bcq_logit_reg", "sac_alpha",
                     "td3_bc_alpha", "iql_beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("reward_scale", "huber_delta_s", "rho_huber_delta", "q_temperature", "lr",
                     "embedding_lr", "hard_update_every", "gumbel_temperature",
                     "td3_policy_delay", "iql_max_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name, allowed in (("target_mode", L.TARGET_MODES), ("actor_loss", L.ACTOR_LOSSES),
                              ("plain_actor_loss", L.PLAIN_ACTOR_LOSSES),
                              ("target_update", TARGET_UPDATES), ("discount", DISCOUNTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def td_huber_delta(self) -> float:
        """delta of the TD (and w/o DD time) Huber loss in reward units."""
        return self.huber_delta_s * self.reward_scale


def transition_discount(batch: dict[str, torch.Tensor],
                        settings: SLMGACSettings) -> float | torch.Tensor:
    """d_t: gamma (``discount="request"``), or (B,) gamma where ``next_new_session``, else 1."""
    if settings.discount == "request":
        return settings.gamma
    if S.NEXT_NEW_SESSION not in batch:
        raise KeyError(f"discount='session' needs the samples' {S.NEXT_NEW_SESSION!r} column "
                       "(rebuild them with `rliv build-live-samples`)")
    new = batch[S.NEXT_NEW_SESSION].bool()
    return torch.where(new, settings.gamma, 1.0).to(torch.float32)


def check_batch(batch: dict[str, torch.Tensor], spec: SLMGACSpec) -> None:
    """Ranks and widths of the columns the objective reads (no device sync): names the bad one."""
    b = batch[S.ACTION].shape[0]
    for column in (S.ACTION, *STATE_COLUMNS, *OUTCOME_COLUMNS):
        for name in (column, S.next_column(column)):
            if name not in batch:
                raise KeyError(f"SL-MGAC batch lacks column {name!r}")
    if DONE not in batch:
        raise KeyError(f"SL-MGAC batch lacks column {DONE!r}")
    if spec.session_state:
        for column in SESSION_COLUMNS:
            for name in (column, S.next_column(column)):
                if name not in batch:
                    raise KeyError(f"SL-MGAC batch lacks column {name!r} (the network reads "
                                   "the session state: rebuild the samples)")
                if batch[name].shape != (b,):
                    raise ValueError(f"{name} must have shape (B={b},), got "
                                     f"{tuple(batch[name].shape)}")
    widths = {S.USER_FEATURES: spec.user_dim, S.LIVE_FEATURES: spec.live_dim,
              S.LIVE_HISTORY: None, S.VIDEO_HISTORY: None}
    for column in STATE_COLUMNS:
        for name in (column, S.next_column(column)):
            t = batch[name]
            rank = 2 if column in widths else 1
            if t.dim() != rank or t.shape[0] != b:
                raise ValueError(f"{name} must have shape (B={b}{', w' * (rank - 1)}), "
                                 f"got {tuple(t.shape)}")
            if widths.get(column) is not None and t.shape[1] != widths[column]:
                raise ValueError(f"{name} must have width {widths[column]}, got {t.shape[1]}")


def forward_state(net: SLMGACNetwork, batch: dict[str, torch.Tensor], next_state: bool = False,
                  *, actor: bool = True, critics: bool = True) -> Outputs:
    """The network on the batch's requests s_t, or the users' next requests s_{t+1}."""
    col = S.next_column if next_state else (lambda c: c)
    session = (torch.stack([batch[col(c)].float() for c in SESSION_COLUMNS], dim=-1)
               if net.spec.session_state else None)  # (B, 2)
    return net(*(batch[col(c)] for c in STATE_COLUMNS), session=session, actor=actor,
               critics=critics)


def _outcomes(batch: dict[str, torch.Tensor], next_state: bool) -> tuple[torch.Tensor, ...]:
    col = S.next_column if next_state else (lambda c: c)
    live, video, n = (batch[col(c)] for c in OUTCOME_COLUMNS)
    return live.float(), video.float(), n.float().clamp(min=1.0)


def _clipped(spec: SLMGACSpec, live: torch.Tensor, video: torch.Tensor,
             n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """T^l and T^v clipped to what the bins reconstruct (T^v / n per video if so binned)."""
    if spec.video_time == "per_video":
        return spec.live_bins.clip(live), spec.video_bins.clip(video / n) * n
    return spec.live_bins.clip(live), spec.video_bins.clip(video)


def reward_hat(out: Outputs, spec: SLMGACSpec, settings: SLMGACSettings,
               live: torch.Tensor, video: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """R_psi_i(s, a) (C, B, 2) from the RPNs (Eq. 10); the stored times pick logged bins."""
    video_obs = video / n if spec.video_time == "per_video" else video
    t_live = out.live.predicted_seconds(spec.live_bins, live)  # (C, B)
    t_video = out.video.predicted_seconds(spec.video_bins, video_obs)
    if not spec.discretise:  # w/o DD heads give scale * seconds (see rpn_loss)
        t_live, t_video = t_live / settings.reward_scale, t_video / settings.reward_scale
    if spec.video_time == "per_video":
        t_video = t_video * n
    r1 = L.watch_time_reward(torch.ones_like(t_live), t_live, t_video, n, settings.beta,
                             settings.reward_scale)
    return L.with_reward_per_action(r1)


def q_values(out: Outputs, spec: SLMGACSpec, settings: SLMGACSettings,
             outcomes: tuple[torch.Tensor, ...],
             r_hat: torch.Tensor | None = None) -> torch.Tensor:
    """Q_i(s, a) = R_psi_i(s, a) + gamma T_xi_i(s, a), (C, B, 2) (Eq. 8); w/o SL: the QRN.

    ``r_hat`` (C, B, 2) reuses (or detaches) an R_psi already computed from ``out``.
    """
    if not spec.supervised_split:
        return out.residual
    r = reward_hat(out, spec, settings, *outcomes) if r_hat is None else r_hat
    scale = settings.gamma if settings.qrn_gamma_scale else 1.0
    return r + scale * out.residual


def rpn_loss(out: Outputs, spec: SLMGACSpec, settings: SLMGACSettings,
             batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_RPN (Eq. 11) over both watch times and all critics; zero-width bins are masked.

    The live time is observed only where a stream was injected (a = 1); the video time on
    every row. With predicted bins their cross-entropy is added. w/o DD the head regresses the
    scaled time, reward_scale * T, with the TD loss's delta (``td_huber_delta``): a 1200 s time
    is 12 at scale 0.01, inside the quadratic zone, so the head estimates the mean (a delta of
    1 on raw seconds estimated the median, 0 s for the live time: "never inject").
    """
    live, video, n = _outcomes(batch, False)
    video = video / n if spec.video_time == "per_video" else video
    injected = batch[S.ACTION].long() == 1
    total = torch.zeros((), device=live.device)
    for head, bins, t, observed in ((out.live, spec.live_bins, live, injected),
                                    (out.video, spec.video_bins, video, None)):
        if head.seconds is not None:
            t = bins.clip(t) if settings.clip_watch_time else t
            total = total + L.direct_time_loss(head.seconds, t, observed,
                                               settings.td_huber_delta, settings.reward_scale)
            continue
        index = bins.bin_index(t)
        keep = bins.has_width(t)[index]
        keep = keep if observed is None else keep & observed
        total = total + L.rpn_proportion_loss(head.rho, bins.one_hot(t),
                                              bins.in_bin_proportion(t), keep,
                                              settings.rho_huber_delta)
        if head.bin_logits is not None:
            total = total + L.bin_classification_loss(head.bin_logits, index, observed)
    return total


def next_value(next_target: Outputs, next_online: Outputs | None, spec: SLMGACSpec,
               settings: SLMGACSettings, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """V'(s_{t+1}) (B,) of the chosen ``target_mode`` (no gradient)."""
    outcomes = _outcomes(batch, True)
    q_next = q_values(next_target, spec, settings, outcomes)
    mode, kwargs = settings.target_mode, {}
    if mode == "double_dqn":
        kwargs["next_q_online"] = q_values(next_online, spec, settings, outcomes)
    elif mode == "logged_next":
        kwargs["next_action"] = batch[S.next_column(S.ACTION)].long()
    elif mode == "vanilla":
        kwargs["next_pi"] = torch.softmax(next_online.logits, dim=-1)
    feasible = batch[S.next_column(S.LIVE_ID)] >= 0
    return L.next_state_value(q_next, mode, feasible=feasible, **kwargs)


def sl_mgac_losses(out: Outputs, next_online: Outputs | None, next_target: Outputs,
                   batch: dict[str, torch.Tensor], spec: SLMGACSpec,
                   settings: SLMGACSettings) -> tuple[L.SLMGACLoss, dict[str, float]]:
    """The terms of Eq. 15 and metrics from the online outputs on s_t (with gradients) and the
    online / target outputs on s_{t+1} (no gradients; ``next_online`` may be None unless the
    target mode needs it)."""
    s = settings
    action = batch[S.ACTION].long()
    outcomes = _outcomes(batch, False)
    live, video = _clipped(spec, *outcomes) if s.clip_watch_time else outcomes[:2]
    reward = L.watch_time_reward(action, live, video, outcomes[2], s.beta, s.reward_scale)
    y = L.td_target(reward, next_value(next_target, next_online, spec, s, batch),
                    transition_discount(batch, s), batch[DONE])

    r_hat = reward_hat(out, spec, s, *outcomes) if spec.supervised_split else None  # (C,B,2)
    r_td = r_hat.detach() if r_hat is not None and s.detach_rpn_in_td else r_hat
    q_taken = L.taken(q_values(out, spec, s, outcomes, r_td), action)  # (C, B)
    critic = L.critic_loss(q_taken, y, s.td_huber_delta)
    rpn = (rpn_loss(out, spec, s, batch) if spec.supervised_split
           else torch.zeros((), device=y.device))

    q_pi = q_values(out, spec, s, outcomes, r_hat).min(dim=0).values  # (B, 2)
    q_pi = q_pi.detach() if s.detach_q_in_actor else q_pi
    feasible = batch[S.LIVE_ID] >= 0
    actor = L.actor_loss(out.logits, q_pi, action, form=s.actor_loss, q_norm=s.q_norm,
                         temperature=s.q_temperature, plain=s.plain_actor_loss, mask=feasible)
    parts = L.SLMGACLoss(critic, s.rpn_weight * rpn, s.actor_weight * actor)
    return parts, _metrics(parts, critic, rpn, actor, q_taken, y, reward, out.logits, feasible,
                           None if r_hat is None else L.taken(r_hat, action))


@torch.no_grad()
def _metrics(parts: L.SLMGACLoss, critic: torch.Tensor, rpn: torch.Tensor,
             actor: torch.Tensor, q_taken: torch.Tensor, y: torch.Tensor,
             reward: torch.Tensor, logits: torch.Tensor, feasible: torch.Tensor,
             r_hat_taken: torch.Tensor | None) -> dict[str, float]:
    """Loss terms, Q and target statistics, and the policy's inject rate over feasible rows."""
    pi_inject = torch.softmax(logits, dim=-1)[:, 1]
    f = feasible.float()
    metrics = {"loss/total": parts.total.item(), "loss/critic": critic.item(),
               "loss/rpn": rpn.item(), "loss/actor": actor.item(),
               "q/mean": q_taken.mean().item(), "q/std": q_taken.std().item(),
               "q/target_mean": y.mean().item(), "reward/mean": reward.mean().item(),
               "pi/inject_mean": L.masked_mean(pi_inject, f).item(),
               "pi/greedy_inject_rate": L.masked_mean((pi_inject > 0.5).float(), f).item()}
    if r_hat_taken is not None:
        metrics["reward_hat/mean"] = r_hat_taken.mean().item()
    return metrics


def sl_mgac_loss(net: SLMGACNetwork, target: SLMGACNetwork, batch: dict[str, torch.Tensor],
                 settings: SLMGACSettings, step: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss L (Eq. 15) and metrics, running the online and target networks on the batch
    (``step``, the update count, is not read: the baselines' loss signature)."""
    check_batch(batch, net.spec)
    out = forward_state(net, batch)
    with torch.no_grad():
        next_target = forward_state(target, batch, True, actor=False)
        mode = settings.target_mode
        next_online = (forward_state(net, batch, True, actor=mode == "vanilla",
                                     critics=mode == "double_dqn")
                       if mode in ("vanilla", "double_dqn") else None)
    parts, metrics = sl_mgac_losses(out, next_online, next_target, batch, net.spec, settings)
    return parts.total, metrics


@torch.no_grad()
def update_target(net: SLMGACNetwork, target: SLMGACNetwork, settings: SLMGACSettings,
                  step: int) -> None:
    """phi' <- tau phi + (1 - tau) phi' each step, or phi' <- phi every N steps (EQUATIONS 1.16)."""
    if settings.target_update == "hard":
        if step % settings.hard_update_every == 0:
            target.load_state_dict(net.state_dict())
        return
    for p, p_t in zip(net.parameters(), target.parameters(), strict=True):
        p_t.lerp_(p, settings.tau)


@torch.no_grad()
def inject_probability(net: SLMGACNetwork, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """pi_theta(1 | s) (B,), 0 where no live stream is on air. Only the actor runs."""
    logits = forward_state(net, batch, critics=False).logits
    p = torch.softmax(logits, dim=-1)[:, 1]
    return torch.where(batch[S.LIVE_ID] >= 0, p, torch.zeros_like(p))


@torch.no_grad()
def greedy_inject_probability(net: SLMGACNetwork, batch: dict[str, torch.Tensor],
                              epsilon: float = EPSILON) -> torch.Tensor:
    """P(a = 1 | s) under Eq. 16: (1 - eps) 1[argmax_a pi = 1] + eps / 2; 0 with no live."""
    greedy = (inject_probability(net, batch) > 0.5).float()
    p = (1.0 - epsilon) * greedy + 0.5 * epsilon
    return torch.where(batch[S.LIVE_ID] >= 0, p, torch.zeros_like(p))


@torch.no_grad()
def act(net: SLMGACNetwork, batch: dict[str, torch.Tensor], epsilon: float = EPSILON,
        rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Epsilon-greedy actions (Eq. 16) and their propensities P(a | s), both (B,).

    xi ~ U(0, 1); a = argmax_a pi(a|s) if xi >= eps, else uniform over {0, 1}; a = 0 with
    propensity 1 where no live stream is on air. The propensity is the logged behaviour_prob.
    ``rng`` must live on the batch's device.
    """
    p1 = greedy_inject_probability(net, batch, epsilon)  # (B,)
    u = torch.rand(p1.shape, generator=rng, device=p1.device)
    action = (u < p1).long()
    return action, torch.where(action == 1, p1, 1.0 - p1)
