"""How RLIV-UA's parameters move: optimisers and the lazy target update of the id tables.

Plain torch, shared by the RLlib learner and the bare-torch benchmark loop.

* ``id_optimizer="lazy_adam"`` (default): the two hashed id tables get sparse gradients and a
  row-wise Adam (``torch.optim.SparseAdam``, TensorFlow's LazyAdam): only the rows of the
  batch's ids move, and their moments decay only when they are seen. Everything else gets a
  fused Adam. What this changes in learning: dense Adam keeps moving a row for some updates
  after its id was last seen (its first moment decays by beta1 = 0.9 per update, its second
  by beta2 = 0.999), lazy Adam does not. Per update it costs O(batch) instead of
  O(table rows x embedding dim), which was half of an update with 2 x 65,536-row tables.
* ``id_optimizer="adam"``: one dense Adam over everything (the behaviour before lazy Adam).

Under lazy Adam an id row that no batch touches does not change, so its target rows can
follow in closed form (:class:`~rliv_ray.algorithms.common.targets.RowwisePolyak`):
:class:`IdTableTargets` keeps the same target values as per-update Polyak over the whole
network, paid only on the batch's rows.
"""

from __future__ import annotations

import torch

from rliv_ray.algorithms.common.targets import RowwisePolyak, polyak_update
from rliv_ray.algorithms.rliv_ua.network import RLIVUANetwork

ID_OPTIMIZERS = ("lazy_adam", "adam")


def make_optimizers(net: RLIVUANetwork, id_optimizer: str, lr: float
                    ) -> dict[str, tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]]:
    """Optimisers by name with the parameters each one moves (lazy Adam also switches the
    id tables to sparse gradients)."""
    if id_optimizer not in ID_OPTIMIZERS:
        raise ValueError(f"id_optimizer must be one of {ID_OPTIMIZERS}, got '{id_optimizer}'")
    if id_optimizer == "adam":
        params = list(net.parameters())
        return {"default_optimizer": (torch.optim.Adam(params, lr=lr, foreach=True), params)}
    embeddings = net.id_embeddings().values()
    tables = [e.table.weight for e in embeddings]
    dense = [p for p in net.parameters() if all(p is not t for t in tables)]
    for embedding in embeddings:
        embedding.table.sparse = True
    return {"dense": (torch.optim.Adam(dense, lr=lr, fused=True), dense),
            "ids": (torch.optim.SparseAdam(tables, lr=lr), tables)}


class IdTableTargets:
    """Polyak averaging of ``target`` towards ``net`` when the id tables move lazily.

    Call :meth:`catch_up` with the batch before the target network reads it, and
    :meth:`step` after the optimiser step: the target network then holds exactly what
    per-update Polyak over every parameter would hold (up to float rounding) for the rows the
    forward reads. :meth:`sync_all` brings every row up to date (before a checkpoint).
    """

    def __init__(self, net: RLIVUANetwork, target: RLIVUANetwork, tau: float):
        self.net, self.target, self.tau = net, target, tau
        self.tables = {column: RowwisePolyak(e.buckets, tau, e.table.weight.device)
                       for column, e in net.id_embeddings().items()}
        names = {id(e): name for name, e in net.named_children()}
        self.skip = tuple(f"{names[id(e)]}.table.weight" for e in net.id_embeddings().values())
        self.touched: dict[str, torch.Tensor] = {}

    def _weights(self, column: str) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.net.id_embeddings()[column].table.weight,
                self.target.id_embeddings()[column].table.weight)

    def catch_up(self, batch: dict[str, torch.Tensor]) -> None:
        """The batch's id rows take the Polyak steps they skipped while untouched."""
        for column, lazy in self.tables.items():
            rows = self.touched[column] = self.net.id_embeddings()[column].rows(
                batch[column]).unique()
            lazy.catch_up(*self._weights(column), rows)

    def step(self) -> None:
        """One Polyak step: every non-table tensor, and the rows the last batch touched."""
        polyak_update(self.net, self.target, self.tau, skip=self.skip)
        for column, lazy in self.tables.items():
            lazy.step(*self._weights(column), self.touched[column])

    def sync_all(self) -> None:
        for column, lazy in self.tables.items():
            lazy.sync_all(*self._weights(column))

    def reset(self) -> None:
        """The target tables were replaced by up-to-date ones (a checkpoint without
        :meth:`snapshot`)."""
        for lazy in self.tables.values():
            lazy.reset()

    @torch.no_grad()
    def snapshot(self) -> dict[str, dict[str, torch.Tensor]]:
        """The lazy state as it is: each target table (rows not yet brought up to date) and
        the Polyak steps each row owes. :meth:`restore` puts it back, bit for bit."""
        return {column: {"target": self._weights(column)[1].detach().clone(),
                         "owed": lazy.updates - lazy.synced_at}
                for column, lazy in self.tables.items()}

    @torch.no_grad()
    def restore(self, snapshot: dict[str, dict[str, torch.Tensor]]) -> None:
        for column, lazy in self.tables.items():
            saved = snapshot[column]
            self._weights(column)[1].copy_(torch.as_tensor(saved["target"]))
            lazy.synced_at.copy_(lazy.updates - torch.as_tensor(saved["owed"]))
