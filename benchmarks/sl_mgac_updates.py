"""SL-MGAC update speed against plain MLP actor-critics of equal FLOPs and parameter count.

All arms are bare torch updates, run interleaved in one process (A, B, C, A, B, C, ...; each
repeat times ``--updates`` updates of each arm after a warm-up), so the machine's load hits
all of them:

* **SL-MGAC**: exactly the learner's update: ``sl_mgac_loss`` (objective.py: check the batch,
  online forward on s_t, target forward on s_{t+1}, Eq. 15 and its metrics), one Adam step over
  the two parameter groups (fused, as ``SLMGACLearner``) and the Polyak update of the target
  (``polyak_update``, as ``TargetUpdatingLearner``). Config defaults, batch 2,048.
* **Plain MLP AC**: x = [user features; live features; E[live id]], a trunk of two ReLU layers
  of width H, an actor head (2 logits) and C = 2 critic heads (2 Q each); TD target
  r + gamma max_a min_i Q'_i(s', a) from a Polyak target copy, Huber critic loss and the
  soft cross-entropy actor loss; the same Adam and Polyak update.

Matching. The MLP's FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` over
one update (loss, backward); H is the width whose count is closest to a target; then the id
table E gets the rows that bring the MLP's parameter count to SL-MGAC's (a lookup costs no
FLOPs; Adam and Polyak cost per parameter). Two targets, two MLP arms:

* ``mlp_model``: the FLOPs of the network *as the paper writes it* (:func:`model_flops`: the
  score FFN on [q, e, q * e, q - e] at all L history positions, one group tower per row),
  3 x forward (forward + backward) on s_t plus the target's forward on s_{t+1}. It does not
  depend on how the network is implemented: the same MLP before and after a speed-up.
* ``mlp_counted``: the matmul FLOPs FlopCounterMode counts on the SL-MGAC update as the code
  runs it (before the speed-ups every group tower ran on every row; after, the attention
  skips padding and its first layer is smaller): equal work for the code as it is.

Data: synthetic batches as the tests build them (``synthetic.random_batch``, histories of
``schema.HISTORY_LENGTH`` = 50, the live world's feature widths 9 and 5) or, with
``--samples``, random batches of the train shards of ``rliv build-live-samples``.

    python benchmarks/sl_mgac_updates.py [--repeats 7] [--updates 10] [--threads 1]
    python benchmarks/sl_mgac_updates.py --profile     # top ops of SL-MGAC updates
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from rliv_ray import schema as S
from rliv_ray.algorithms.common.memory import reuse_freed_memory
from rliv_ray.algorithms.common.targets import polyak_update
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec
from rliv_ray.algorithms.sl_mgac.objective import DONE, SLMGACSettings, sl_mgac_loss
from rliv_ray.algorithms.sl_mgac.synthetic import random_batch

BATCH = 2048  # SLMGACConfig.train_batch_size_per_learner (section 4.3)
USER_DIM, LIVE_DIM = 9, 5  # live_world.USER_FEATURE_NAMES, LIVE_FEATURE_NAMES
EPOCHS, TRANSITIONS = 500, 162_000  # the paper's 500 epochs of the Tables' training set
Batch = dict[str, torch.Tensor]


class Arm:
    """An update: loss, Adam step, Polyak target update."""

    net: nn.Module
    target: nn.Module
    optimizer: torch.optim.Optimizer
    settings: SLMGACSettings

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def step(self, batch: Batch) -> None:
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        polyak_update(self.net, self.target, self.settings.tau)


class SLMGACArm(Arm):
    """The learner's update on a bare network and its target."""

    def __init__(self, spec: SLMGACSpec, settings: SLMGACSettings):
        torch.manual_seed(0)
        self.net, self.settings = SLMGACNetwork(spec), settings
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(
            self.net.param_groups(settings.lr, settings.embedding_lr), fused=True)

    def loss(self, batch: Batch) -> torch.Tensor:
        return sl_mgac_loss(self.net, self.target, batch, self.settings)[0]


class PlainActorCritic(nn.Module):
    """x = [u; l; E[id]] -> h = ReLU(W2 ReLU(W1 x)) -> actor logits (B, 2), critics (C, B, 2)."""

    def __init__(self, hidden: int, table_rows: int, critics: int = 2, dim: int = 16):
        super().__init__()
        self.critics = critics
        self.table = nn.Embedding(table_rows, dim)
        self.trunk = nn.Sequential(nn.Linear(USER_DIM + LIVE_DIM + dim, hidden), nn.ReLU(),
                                   nn.Linear(hidden, hidden), nn.ReLU())
        self.actor = nn.Linear(hidden, 2)
        self.critic = nn.Linear(hidden, 2 * critics)

    def forward(self, user, live, ids, actor: bool = True):
        e = self.table(ids.clamp(min=0).remainder(self.table.num_embeddings))
        h = self.trunk(torch.cat([user.float(), live.float(), e], dim=-1))
        q = self.critic(h).view(-1, self.critics, 2).transpose(0, 1)  # (C, B, 2)
        return (self.actor(h) if actor else None), q


class MLPArm(Arm):
    """The plain MLP actor-critic's update (same settings, Adam and Polyak as SL-MGAC)."""

    def __init__(self, hidden: int, table_rows: int, settings: SLMGACSettings):
        torch.manual_seed(0)
        self.net, self.settings = PlainActorCritic(hidden, table_rows), settings
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=settings.lr, fused=True)

    def loss(self, batch: Batch) -> torch.Tensor:
        s = self.settings
        columns = (S.USER_FEATURES, S.LIVE_FEATURES, S.LIVE_ID)
        logits, q = self.net(*(batch[c] for c in columns))
        with torch.no_grad():
            _, q_next = self.target(*(batch[S.next_column(c)] for c in columns), actor=False)
            n = batch[S.N_VIDEOS].float().clamp(min=1.0)
            r = s.reward_scale * batch[S.ACTION].float() * (
                batch[S.LIVE_WATCH_S] - s.beta * batch[S.VIDEO_WATCH_S] / n)
            y = r + s.gamma * (~batch[DONE]).float() * q_next.min(0).values.max(-1).values
        action = batch[S.ACTION].long()
        q_taken = q.gather(-1, action.view(1, -1, 1).expand(q.shape[0], -1, 1)).squeeze(-1)
        critic = F.huber_loss(q_taken, y.expand_as(q_taken), delta=s.td_huber_delta)
        weights = torch.softmax(q.min(0).values / s.q_temperature, dim=-1)
        actor = -(weights * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        return critic + actor


def model_flops(spec: SLMGACSpec, batch: int, history: int) -> int:
    """FLOPs of one update of the network as the paper writes it, 2 per multiply-add:
    3 x the online forward on s_t (forward + backward) + the target's forward on s_{t+1}."""
    d, c = spec.embedding_dim, spec.n_critics

    def mlp(sizes: tuple[int, ...]) -> int:
        return sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))

    score = mlp((4 * d, *spec.attention_hidden, 1))
    features = ((spec.user_dim + spec.live_dim) * d + 2 * (2 * d * d + history * score)
                + mlp((4 * d, *spec.shared_hidden)))
    width = spec.shared_hidden[-1]
    critics = c * mlp((width, *spec.qrn_hidden, 2))
    if spec.supervised_split:
        critics += c * sum(mlp((width, *spec.rpn_hidden, spec.rpn_width(bins)))
                           for bins in (spec.live_bins, spec.video_bins))
    actor = mlp((width, *spec.actor_hidden, 2))
    return 2 * batch * (3 * (features + critics + actor) + features + critics)


def update_flops(arm: Arm, batch: Batch) -> int:
    """Matmul FLOPs of one update's loss and backward (the optimizer has none)."""
    with FlopCounterMode(display=False) as counter:
        arm.loss(batch).backward()
    arm.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def matched_mlp(flops: int, params: int, settings: SLMGACSettings, batch: Batch) -> MLPArm:
    """The MLP arm whose update FLOPs are closest to ``flops``, with ``params`` parameters
    (or the fewest it can have, one table row, when its layers alone have more)."""
    def count(hidden: int) -> int:
        return update_flops(MLPArm(hidden, 1, settings), batch)

    lo, hi = 4, 8
    while count(hi) <= flops:  # FLOPs grow with H
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # the largest H at or below the target
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= flops else (lo, mid)
    hidden = min((lo, hi), key=lambda h: abs(count(h) - flops))
    dim = 16
    rest = params - n_params(MLPArm(hidden, 1, settings).net) + dim  # one row counted there
    return MLPArm(hidden, max(1, round(rest / dim)), settings)


def synthetic_batches(spec: SLMGACSpec, count: int) -> list[Batch]:
    return [random_batch(spec, BATCH, history=S.HISTORY_LENGTH, seed=i) for i in range(count)]


def sample_batches(samples: str, count: int) -> list[Batch]:
    """Random batches of the train shards of ``rliv build-live-samples``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rliv_ray.algorithms.sl_mgac.train import train_files
    from rliv_ray.offline.live_prelearner import live_batch_to_arrays

    files, _ = train_files(samples)
    arrays = live_batch_to_arrays(pa.concat_tables(pq.read_table(f) for f in files),
                                  module_id="m")
    data = {k.split("/", 1)[1]: torch.from_numpy(v) for k, v in arrays.items()}
    g = torch.Generator().manual_seed(0)
    rows = len(data[S.ACTION])
    return [{k: v[torch.randint(0, rows, (BATCH,), generator=g)] for k, v in data.items()}
            for _ in range(count)]


def timed(arm: Arm, batches: list[Batch], updates: int, offset: int) -> float:
    """Updates per second over ``updates`` updates."""
    started = time.perf_counter()
    for i in range(updates):
        arm.step(batches[(offset + i) % len(batches)])
    return updates / (time.perf_counter() - started)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def profile(arm: Arm, batch: Batch, rows: int, updates: int) -> None:
    """Top ops by self CPU time over ``updates`` updates (after a warm-up)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(3):
        arm.step(batch)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            arm.step(batch)
    print(f"{updates} updates, batch {BATCH}, {torch.get_num_threads()} torch threads")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--updates", type=int, default=10, help="updates per arm per repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--samples", help="build-live-samples output (else synthetic)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="print the op table only")
    parser.add_argument("--rows", type=int, default=15, help="rows of the profile table")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="keep glibc's malloc settings (the learners call "
                             "memory.reuse_freed_memory; this measures the loop without it)")
    args = parser.parse_args()
    if not args.malloc_defaults:
        reuse_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec, settings = SLMGACSpec(USER_DIM, LIVE_DIM), SLMGACSettings()
    batches = (sample_batches(args.samples, args.batches) if args.samples
               else synthetic_batches(spec, args.batches))
    sl = SLMGACArm(spec, settings)
    if args.profile:
        profile(sl, batches[0], args.rows, args.updates)
        return
    flops = {"model": model_flops(spec, BATCH, S.HISTORY_LENGTH),
             "counted": update_flops(sl, batches[0])}
    arms: dict[str, Arm] = {"sl_mgac": sl}
    for name, target in flops.items():
        arms[f"mlp_{name}"] = matched_mlp(target, n_params(sl.net), settings, batches[0])
    for arm in arms.values():
        timed(arm, batches, args.warmup, 0)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.repeats):
        for name, arm in arms.items():
            rates[name].append(timed(arm, batches, args.updates, r * args.updates))
    rate = statistics.median(rates["sl_mgac"])
    updates = EPOCHS * TRANSITIONS / BATCH
    mlps = {name: {"hidden": arm.net.trunk[0].out_features,
                   "table_rows": arm.net.table.num_embeddings,
                   "flops": update_flops(arm, batches[0]), "params": n_params(arm.net)}
            for name, arm in arms.items() if name != "sl_mgac"}
    print(json.dumps({
        "torch_threads": torch.get_num_threads(), "batch": BATCH,
        "data": args.samples or "synthetic", "repeats": args.repeats,
        "updates_per_repeat": args.updates,
        "sl_mgac": {"model_flops": flops["model"], "counted_flops": flops["counted"],
                    "params": n_params(sl.net)},
        "mlps": mlps,
        "updates_per_s": {name: summary(v) for name, v in rates.items()},
        "ratio_sl_mgac_over": {name: summary([a / b for a, b in zip(
            rates["sl_mgac"], rates[name], strict=True)]) for name in mlps},
        "projection_500_epochs": {"updates": round(updates),
                                  "hours": round(updates / rate / 3600, 2)},
    }, indent=2))


if __name__ == "__main__":
    main()
