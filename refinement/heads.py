"""A small head trained on cached frozen features, and its export into the stock classifier.

The head mirrors the stock model's own head exactly (see features.py), so exporting is copying weights:
`linear` -> the final Linear (with or without bias, as the stock head has it); `mlp` -> pooler dense + tanh +
classifier of a BERT-like model.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .sampling import stratified_batches

Risk = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class HeadTrainingConfig:
    head: str = "linear"
    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def build_head(head: str, dim: int, bias: bool) -> nn.Module:
    if head == "linear":
        return nn.Linear(dim, 1, bias=bias)
    if head == "mlp":
        return nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=bias))
    raise ValueError(f"unknown head {head!r}")


def fold_standardization(layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrites `layer`, trained on (x - mean) / std, to act on raw x: W' = W / std, b' = b - W' mean.

    Training on standardized features is far better conditioned (a frozen BERT pooler's outputs crowd near
    +-1); folding keeps the shipped head a plain Linear of the stock model."""
    with torch.no_grad():
        layer.weight.div_(std)
        if layer.bias is not None:
            layer.bias.sub_(layer.weight @ mean)


def train_head(train_x: np.ndarray, train_pseudo: np.ndarray, val_x: np.ndarray, val_pseudo: np.ndarray,
               risk: Risk, val_risk: Risk, config: HeadTrainingConfig, bias: bool,
               sample_weight: np.ndarray | None = None) -> tuple[nn.Module, list[dict]]:
    """Trains a head with `risk` on stratified mini-batches; keeps the epoch with the lowest `val_risk` on the
    pseudo-labeled validation split (no gold labels). Returns the best head and the per-epoch history."""
    torch.manual_seed(config.seed)
    head = build_head(config.head, train_x.shape[1], bias)
    first = next(m for m in head.modules() if isinstance(m, nn.Linear))
    raw = torch.from_numpy(train_x).float()
    # A head without bias cannot absorb a shift, so it is only scaled.
    mean = raw.mean(0) if first.bias is not None else torch.zeros(raw.shape[1])
    std = raw.std(0).clamp_min(1e-6)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    x, y = (raw - mean) / std, torch.from_numpy(train_pseudo).float()
    vx, vy = (torch.from_numpy(val_x).float() - mean) / std, torch.from_numpy(val_pseudo).float()
    best, best_risk, history = copy.deepcopy(head), math.inf, []
    for epoch in range(1, config.epochs + 1):
        head.train()
        for batch in stratified_batches(train_pseudo, config.batch_size, config.seed + epoch):
            loss = risk(head(x[batch]).squeeze(-1), y[batch])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training risk is {loss.item()} at epoch {epoch}; lower the learning "
                                         "rate or check the priors")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            current = float(val_risk(head(vx).squeeze(-1), vy))
        history.append({"epoch": epoch, "val_risk": current})
        if current < best_risk:
            best, best_risk = copy.deepcopy(head), current
    fold_standardization(next(m for m in best.modules() if isinstance(m, nn.Linear)), mean, std)
    return best.eval(), history


def head_logits(head: nn.Module, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.from_numpy(features).float()).squeeze(-1).numpy()


def load_head_into(model: nn.Module, head: nn.Module, module_names: list[str]) -> nn.Module:
    """Copies a trained head into the stock model's modules (named by features.head_module_names)."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    targets = [model.get_submodule(n) for n in module_names if isinstance(model.get_submodule(n), nn.Linear)]
    if len(linears) != len(targets):
        raise ValueError(f"head has {len(linears)} Linear layers but the stock model offers {len(targets)}")
    with torch.no_grad():
        for source, target in zip(linears, targets):
            target.weight.copy_(source.weight)
            if source.bias is not None:
                target.bias.copy_(source.bias)
    return model
