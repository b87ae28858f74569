"""Risks for learning from two unlabeled sets (Cp, Cn) with pseudo-labels, as pure functions over logits.

Notation (../shared/METHOD.md): pseudo-labels split a batch into Cp (pseudo 1 = harmless) and Cn (pseudo 0);
prior = pi = P(y=1); theta_p = P(y=1 | pseudo 1); theta_n = P(y=1 | pseudo 0). Sigmoid loss:
l(z, +) = sigmoid(-z), l(z, -) = sigmoid(z). Every risk is a scalar tensor with a gradient.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

LOSSES = ("robust_uu", "uu", "nnuu", "pn")


class MissingPseudoClassError(ValueError):
    """A batch holds only one pseudo-class: the UU estimate of a partial risk is undefined there."""


def _split_means(logits: torch.Tensor, pseudo_labels: torch.Tensor):
    """Means of sigmoid(-g) and sigmoid(g) over Cp and over Cn."""
    logits = logits.reshape(-1).float()
    positive = pseudo_labels.reshape(-1).to(logits.device) > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise MissingPseudoClassError(
            f"batch of {logits.numel()} holds {n_pos} pseudo-positive and {n_neg} pseudo-negative items; "
            "UU risks need both sets in every batch (use a stratified sampler)"
        )
    loss_as_pos, loss_as_neg = torch.sigmoid(-logits), torch.sigmoid(logits)
    return (
        loss_as_pos[positive].mean(),
        loss_as_neg[positive].mean(),
        loss_as_pos[~positive].mean(),
        loss_as_neg[~positive].mean(),
    )


def uu_coefficients(prior: float, theta_p: float, theta_n: float) -> tuple[float, float, float, float]:
    """(a, b, c, d) of the unbiased UU risk; refuses a non-positive theta_p - theta_n."""
    delta = theta_p - theta_n
    if not delta > 0:
        raise ValueError(f"UU risk needs theta_p > theta_n, got theta_p={theta_p:.4f}, theta_n={theta_n:.4f}")
    return (
        prior * (1 - theta_n) / delta,
        (1 - prior) * theta_n / delta,
        prior * (1 - theta_p) / delta,
        (1 - prior) * theta_p / delta,
    )


def uu_partial_risks(logits, pseudo_labels, prior, theta_p, theta_n) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive-class and negative-class partial risks whose sum is the UU risk.

    positive = a E_Cp[s(-g)] - c E_Cn[s(-g)]   (estimates pi E_+[s(-g)])
    negative = d E_Cn[s(g)]  - b E_Cp[s(g)]    (estimates (1-pi) E_-[s(g)])
    Both are >= 0 in expectation; a negative value means the model is fitting the noise of the split.
    """
    a, b, c, d = uu_coefficients(prior, theta_p, theta_n)
    pos_as_pos, pos_as_neg, neg_as_pos, neg_as_neg = _split_means(logits, pseudo_labels)
    return a * pos_as_pos - c * neg_as_pos, d * neg_as_neg - b * pos_as_neg


def pn_risk(logits: torch.Tensor, pseudo_labels: torch.Tensor) -> torch.Tensor:
    """Naive risk that trusts the pseudo-labels: batch mean of s(-g) on pseudo 1 and s(g) on pseudo 0."""
    logits = logits.reshape(-1).float()
    positive = pseudo_labels.reshape(-1).to(logits.device) > 0.5
    return torch.where(positive, torch.sigmoid(-logits), torch.sigmoid(logits)).mean()


def uu_risk(logits, pseudo_labels, prior: float, theta_p: float, theta_n: float) -> torch.Tensor:
    """Unbiased UU risk (Lu et al., ICLR 2019)."""
    positive, negative = uu_partial_risks(logits, pseudo_labels, prior, theta_p, theta_n)
    return positive + negative


def leaky_correction(partial_risk: torch.Tensor, lam: float) -> torch.Tensor:
    """f(x) = x for x > 0, lam * x otherwise. lam = 0 is the non-negative correction, lam < 0 the robust one:
    a negative partial risk becomes a small positive penalty whose gradient pushes it back up."""
    return torch.where(partial_risk > 0, partial_risk, lam * partial_risk)


def robust_uu_risk(logits, pseudo_labels, prior: float, theta_p: float, theta_n: float,
                   lam: float = -0.001) -> torch.Tensor:
    """Robust UU risk (Asano et al., 2025): each partial risk passed through `leaky_correction`."""
    positive, negative = uu_partial_risks(logits, pseudo_labels, prior, theta_p, theta_n)
    return leaky_correction(positive, lam) + leaky_correction(negative, lam)


def risk_for(loss: str, prior: float, theta_p: float, theta_n: float, lam: float = -0.001
             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training risk named `loss` (one of LOSSES) as a function of (logits, pseudo_labels)."""
    if loss == "pn":
        return pn_risk
    if loss == "uu":
        return lambda g, y: uu_risk(g, y, prior, theta_p, theta_n)
    if loss == "nnuu":
        return lambda g, y: robust_uu_risk(g, y, prior, theta_p, theta_n, lam=0.0)
    if loss == "robust_uu":
        return lambda g, y: robust_uu_risk(g, y, prior, theta_p, theta_n, lam=lam)
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
