"""How hard SL-MGAC's attached actor loss pulls on the Q-residual network, against the TD loss.

    python benchmarks/sl_mgac_gradient_balance.py [--users 2000] [--updates 600] \
        [--every 100] [--reward-scales 0.003 0.01 0.03] [--actor-weights 1 0.1] [--out DIR]

With Q attached in the actor loss (the paper's SL-MGAC; -sep detaches it), L_pi also trains
the critics: its gradient on the QRN's parameters phi pushes Q(s, a) up where pi puts mass.
Per setting (``reward_scale`` x ``actor_weight``; neither is from the paper) this trains
SL-MGAC on one live world's samples with the table's loop (``sl_mgac_table.train``) and, every
``--every`` updates, on a fixed held-aside batch of 2,048 samples, reports

    balance = || d(actor_weight L_pi) / d phi || / || d L_Q / d phi ||

(phi: every QRN parameter) with the greedy inject rate, so a reader sees when the actor's pull
reaches the TD term's. Writes DIR/balance.json and DIR/balance.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rliv_ray import schema as S  # noqa: E402
from rliv_ray.algorithms.sl_mgac.baselines import method  # noqa: E402
from rliv_ray.algorithms.sl_mgac.network import SLMGACNetwork, SLMGACSpec  # noqa: E402
from rliv_ray.algorithms.sl_mgac.objective import (  # noqa: E402
    SLMGACSettings,
    check_batch,
    forward_state,
    sl_mgac_losses,
)
from rliv_ray.data.live_config import LiveWorldConfig  # noqa: E402
from rliv_ray.data.live_population import LivePopulation  # noqa: E402
from rliv_ray.data.live_samples import group_edges, live_samples, user_watch_3w  # noqa: E402
from rliv_ray.ope.evaluate import batch_from_table  # noqa: E402
from rliv_ray.ope.split import split_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from sl_mgac_table import logged_world, train  # noqa: E402


def gradient_balance(net: SLMGACNetwork, target: SLMGACNetwork, batch: dict,
                     settings: SLMGACSettings) -> dict[str, float]:
    """Norms of the TD and the (weighted) actor loss gradients on the QRN's parameters."""
    check_batch(batch, net.spec)
    out = forward_state(net, batch)
    with torch.no_grad():
        next_target = forward_state(target, batch, True, actor=False)
    parts, metrics = sl_mgac_losses(out, None, next_target, batch, net.spec, settings)
    params = [p for p in net.qrn.parameters() if p.requires_grad]

    def norm(loss: torch.Tensor) -> float:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))

    td, actor = norm(parts.critic), norm(parts.actor)
    return {"td_grad": td, "actor_grad": actor, "balance": actor / td,
            "greedy_inject_rate": metrics["pi/greedy_inject_rate"], "q_mean": metrics["q/mean"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--updates", type=int, default=600)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--reward-scales", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    p.add_argument("--actor-weights", type=float, nargs="+", default=[1.0, 0.1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("balance_out"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    world = LiveWorldConfig(n_users=args.users, days=args.days, seed=args.seed,
                            history_length=20)
    pop = LivePopulation.build(world)
    train_log, _ = split_table(logged_world(world, pop))
    edges = group_edges(user_watch_3w(train_log), 6)
    data = batch_from_table(live_samples(train_log, groups=6, edges=edges), edges=edges)
    gen = torch.Generator().manual_seed(args.seed + 1)
    probe = {k: v[torch.randperm(len(data[S.ACTION]), generator=gen)[:2048]]
             for k, v in data.items()}
    m = method("SL-MGAC")
    steps = list(range(args.every, args.updates + 1, args.every))
    results = []
    for scale in args.reward_scales:
        for weight in args.actor_weights:
            spec, settings = m.configure(
                SLMGACSpec(user_dim=data[S.USER_FEATURES].shape[1],
                           live_dim=data[S.LIVE_FEATURES].shape[1], groups=6),
                SLMGACSettings(beta=world.beta, reward_scale=scale, actor_weight=weight))

            def curve(net: SLMGACNetwork, target: SLMGACNetwork,
                      settings: SLMGACSettings = settings) -> dict:
                return gradient_balance(net, target, probe, settings)

            net, history = train(m, spec, settings, data, updates=args.updates,
                                 batch_size=args.batch, seed=args.seed, log_every=args.updates,
                                 curve=curve, curve_at=steps)
            points = [h for h in history if "balance" in h]
            results.append({"reward_scale": scale, "actor_weight": weight, "curve": points})
            last = points[-1]
            print(f"reward_scale {scale:g} actor_weight {weight:g}: balance "
                  + " ".join(f"{h['balance']:.2f}" for h in points)
                  + f"; greedy inject {last['greedy_inject_rate']:.1%}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "balance.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        ax.plot([h["step"] for h in r["curve"]], [h["balance"] for h in r["curve"]], "-o", ms=3,
                label=f"scale {r['reward_scale']:g}, actor weight {r['actor_weight']:g}")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="updates", ylabel="||grad actor|| / ||grad TD|| on the QRN", yscale="log",
           title="SL-MGAC, Q attached: the actor's pull on the critics")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "balance.png", dpi=120)
    print(f"wrote {args.out / 'balance.json'} and balance.png; mean balance at the end: "
          f"{np.mean([r['curve'][-1]['balance'] for r in results]):.2f}")


if __name__ == "__main__":
    main()
