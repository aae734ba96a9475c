"""Start from the best of a few initialisations: the one with the lowest loss on the first batches.

nnU-Net draws one He-initialised network per run. On Hippocampus at 500 iterations (issue 14,
docs/training.md "Starting from the best of several initialisations") how late a run took off
grew with its network's loss before any step (first-epoch loss 0.64 -> take-off at iteration
160, ... 1.21 -> 500, 1.25 -> never), in unetkit and in nnU-Net's own trainer alike, and about
1 start in 20 lies in the tail that fails. So a fresh run draws ``candidates`` networks from its
seed, one after another, scores each by the training loss on the first training batches (the
very batches its first steps will see, in train mode, without a step and without gradients) and
keeps the lowest. Candidate 0 is exactly the network a single draw gives, so
``--init-candidates 1`` starts where nnU-Net would. Buffers a scoring pass changes (batch-norm
running statistics) are put back as they were drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass
class InitSelection:
    """What :func:`select_initialization` compared and kept (stored in training_config.json)."""

    candidates: int
    batches: int
    losses: list[float] = field(default_factory=list)
    chosen: int = 0

    def to_dict(self) -> dict:
        return {"candidates": self.candidates, "batches": self.batches,
                "losses": [round(v, 6) for v in self.losses], "chosen": self.chosen}

    def describe(self) -> str:
        losses = ", ".join(f"{v:.4f}" for v in self.losses)
        return (f"initialisation: {self.candidates} networks drawn from the seed, loss on the first "
                f"{self.batches} training batch(es) {losses}; starting from candidate {self.chosen} "
                "(--init-candidates 1: the single draw nnU-Net would make)")


@torch.no_grad()
def initial_loss(network: torch.nn.Module, batches: Sequence[dict], loss_fn: Callable,
                 prepare: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Mean training loss of ``network`` on ``batches`` (train mode, no step, no gradients)."""
    network.train()
    total = 0.0
    for batch in batches:
        outputs = network(prepare(batch["data"]))
        total += float(loss_fn(outputs, batch["target"].to(batch_device(outputs))))
    return total / max(1, len(batches))


def batch_device(outputs) -> torch.device:
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return first.device


def select_initialization(build: Callable[[], torch.nn.Module], candidates: int, batches: Sequence[dict],
                          loss_fn: Callable, prepare: Callable[[torch.Tensor], torch.Tensor]
                          ) -> tuple[torch.nn.Module, InitSelection]:
    """Build ``candidates`` networks with ``build`` (each draws from torch's generator in turn) and
    return the one with the lowest :func:`initial_loss` on ``batches``, with the record.

    With one candidate nothing is scored: the network is returned as built.
    """
    record = InitSelection(candidates=candidates, batches=len(batches))
    best, best_state, best_loss = None, None, math.inf
    for index in range(candidates):
        network = build()
        if candidates == 1:
            return network, record
        drawn = {k: v.detach().clone() for k, v in network.state_dict().items()}
        loss = initial_loss(network, batches, loss_fn, prepare)
        record.losses.append(loss)
        if best is None or (math.isfinite(loss) and loss < best_loss):  # a NaN loss is never preferred
            best, best_state, best_loss, record.chosen = network, drawn, loss if math.isfinite(loss) else math.inf, index
        del network
    best.load_state_dict(best_state)
    return best, record
