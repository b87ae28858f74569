"""Tests for refinement.losses (PN / UU / nnUU / robust UU risks) and the stratified sampler they rely on.

Notation as in ../shared/METHOD.md: s = sigmoid, Cp = {pseudo 1}, Cn = {pseudo 0}, pi = P(y=1),
theta_p = P(y=1 | pseudo 1), theta_n = P(y=1 | pseudo 0).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from refinement.losses import (
    LOSSES,
    MissingPseudoClassError,
    leaky_correction,
    pn_risk,
    risk_for,
    robust_uu_risk,
    uu_coefficients,
    uu_partial_risks,
    uu_risk,
)
from refinement.sampling import stratified_batches


def _sig(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _random_batch(seed: int, n: int = 64, scale: float = 2.0):
    """Random float32 logits and 0/1 pseudo-labels holding both classes."""
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, generator=gen)
    labels = (torch.rand(n, generator=gen) < 0.4).float()
    labels[0], labels[1] = 1.0, 0.0
    return logits, labels


# --------------------------------------------------------------------------------------------------------------
# 1. theta_p = 1, theta_n = 0: UU and robust UU reduce to the pi-weighted PN risk
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prior", [0.1, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uu_with_clean_split_is_pi_weighted_pn_risk(prior, seed):
    logits, labels = _random_batch(seed)
    g = logits.double().numpy()
    y = labels.numpy().astype(bool)
    by_hand = prior * _sig(-g[y]).mean() + (1 - prior) * _sig(g[~y]).mean()

    for risk in (uu_risk(logits, labels, prior, 1.0, 0.0),
                 robust_uu_risk(logits, labels, prior, 1.0, 0.0),
                 robust_uu_risk(logits, labels, prior, 1.0, 0.0, lam=0.0),
                 risk_for("uu", prior, 1.0, 0.0)(logits, labels),
                 risk_for("nnuu", prior, 1.0, 0.0)(logits, labels),
                 risk_for("robust_uu", prior, 1.0, 0.0)(logits, labels)):
        assert float(risk) == pytest.approx(by_hand, rel=1e-5, abs=1e-7)

    pos, neg = uu_partial_risks(logits, labels, prior, 1.0, 0.0)
    assert float(pos) == pytest.approx(prior * _sig(-g[y]).mean(), rel=1e-5, abs=1e-7)
    assert float(neg) == pytest.approx((1 - prior) * _sig(g[~y]).mean(), rel=1e-5, abs=1e-7)

    # pi-weighted, not the batch mean: it differs from pn_risk whenever pi != the batch's positive share
    batch_mean = np.where(y, _sig(-g), _sig(g)).mean()
    assert float(pn_risk(logits, labels)) == pytest.approx(batch_mean, rel=1e-5, abs=1e-7)
    if abs(prior - y.mean()) > 0.05:
        assert abs(by_hand - batch_mean) > 1e-3


def test_uu_coefficients_match_method():
    prior, tp, tn = 0.3, 0.8, 0.25
    delta = tp - tn
    a, b, c, d = uu_coefficients(prior, tp, tn)
    assert a == pytest.approx(prior * (1 - tn) / delta)
    assert b == pytest.approx((1 - prior) * tn / delta)
    assert c == pytest.approx(prior * (1 - tp) / delta)
    assert d == pytest.approx((1 - prior) * tp / delta)


# --------------------------------------------------------------------------------------------------------------
# 2. On a synthetic mixture the UU estimate of a fixed scorer's risk matches its gold PN risk
# --------------------------------------------------------------------------------------------------------------
def _mixture(seed: int, n: int, prior: float, r1: float, r0: float):
    """Gold y ~ Bernoulli(prior); x | y gaussian; a fixed linear scorer g = w.x + b; pseudo-labels drawn
    independently of x given y with P(pseudo=1|y=1) = r1, P(pseudo=1|y=0) = r0 (so theta_p, theta_n are known)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prior
    mu = np.array([1.0, -0.5, 0.3, 0.0, 0.8])
    x = rng.normal(size=(n, mu.size)) + np.outer(y, mu)
    w, bias = np.array([0.9, -0.4, 0.5, 0.2, 0.6]), -0.3
    g = x @ w + bias
    pseudo = np.where(y, rng.random(n) < r1, rng.random(n) < r0)
    q = prior * r1 + (1 - prior) * r0            # population P(pseudo = 1)
    theta_p = prior * r1 / q
    theta_n = prior * (1 - r1) / (1 - q)
    return g, y, pseudo, theta_p, theta_n


@pytest.mark.parametrize("prior,r1,r0,seed", [(0.35, 0.75, 0.25, 0), (0.7, 0.9, 0.45, 1), (0.5, 0.6, 0.3, 2)])
def test_uu_estimate_matches_gold_risk_of_fixed_scorer(prior, r1, r0, seed):
    n = 200_000
    g, y, p, theta_p, theta_n = _mixture(seed, n, prior, r1, r0)
    a, b, c, d = uu_coefficients(prior, theta_p, theta_n)
    lp, ln = _sig(-g), _sig(g)                   # loss as positive / as negative

    # gold (clean-label) partial risks and PN risk of the fixed scorer, with the population prior
    gold_pos = prior * lp[y].mean()
    gold_neg = (1 - prior) * ln[~y].mean()
    gold = gold_pos + gold_neg

    gt, pt = torch.from_numpy(g), torch.from_numpy(p.astype(np.float64))
    est = float(uu_risk(gt, pt, prior, theta_p, theta_n))
    est_pos, est_neg = (float(v) for v in uu_partial_risks(gt, pt, prior, theta_p, theta_n))

    # standard error of (estimate - gold) by the delta method: each set mean sum(s_i h_i)/sum(s_i) has
    # influence s_i (h_i - mean_S h) / P(S); the estimate and the gold risk are linear in such means.
    q_hat, pi_hat = p.mean(), y.mean()

    def infl(indicator, h, share):
        return indicator * (h - h[indicator].mean()) / share

    psi_pos = (infl(p, a * lp, q_hat) - infl(~p, c * lp, 1 - q_hat) - infl(y, prior * lp, pi_hat))
    psi_neg = (infl(~p, d * ln, 1 - q_hat) - infl(p, b * ln, q_hat) - infl(~y, (1 - prior) * ln, 1 - pi_hat))
    se_pos, se_neg, se = (psi.std() / np.sqrt(n) for psi in (psi_pos, psi_neg, psi_pos + psi_neg))

    assert abs(est - gold) < 4 * se, (est, gold, se)
    assert abs(est_pos - gold_pos) < 4 * se_pos, (est_pos, gold_pos, se_pos)
    assert abs(est_neg - gold_neg) < 4 * se_neg, (est_neg, gold_neg, se_neg)
    assert est == pytest.approx(est_pos + est_neg, rel=1e-6)
    # the tolerance is tight enough to tell a biased estimator apart: the naive PN risk on the noisy
    # pseudo-labels, and the UU risk with the thetas swapped for weaker ones, both miss by far more.
    assert abs(float(pn_risk(gt, pt)) - gold) > 10 * se
    assert abs(float(uu_risk(gt, pt, prior, theta_p - 0.1, theta_n + 0.1)) - gold) > 10 * se


# --------------------------------------------------------------------------------------------------------------
# 3. The lam < 0 correction reverses and shrinks the gradient of a negative partial risk
# --------------------------------------------------------------------------------------------------------------
PRIOR, THETA_P, THETA_N = 0.5, 0.7, 0.3


def _overfitting_batch():
    """Pseudo-positives pushed far up (s(-g) ~ 0.05), pseudo-negatives left near 0: the positive partial risk
    a E_Cp[s(-g)] - c E_Cn[s(-g)] goes negative while the negative partial risk stays positive."""
    gen = torch.Generator().manual_seed(7)
    pseudo = torch.tensor([1.0] * 12 + [0.0] * 20)
    logits = torch.where(pseudo > 0.5, 3.0, 0.0) + 0.3 * torch.randn(32, generator=gen)
    return logits, pseudo


def _grad(fn, logits):
    z = logits.clone().requires_grad_(True)
    fn(z).backward()
    return z.grad.clone()


def test_overfitting_batch_has_negative_positive_partial_risk():
    logits, pseudo = _overfitting_batch()
    pos, neg = uu_partial_risks(logits, pseudo, PRIOR, THETA_P, THETA_N)
    assert float(pos) < -0.05
    assert float(neg) > 0.01


@pytest.mark.parametrize("lam", [-0.001, -0.5, -1.0])
def test_robust_uu_reverses_and_scales_gradient_of_negative_partial(lam):
    logits, pseudo = _overfitting_batch()
    grad_pos = _grad(lambda z: uu_partial_risks(z, pseudo, PRIOR, THETA_P, THETA_N)[0], logits)
    grad_neg = _grad(lambda z: uu_partial_risks(z, pseudo, PRIOR, THETA_P, THETA_N)[1], logits)
    grad_uu = _grad(lambda z: uu_risk(z, pseudo, PRIOR, THETA_P, THETA_N), logits)
    grad_robust = _grad(lambda z: robust_uu_risk(z, pseudo, PRIOR, THETA_P, THETA_N, lam=lam), logits)

    assert grad_pos.abs().min() > 1e-4          # the case is not saturated: there is a gradient to compare
    torch.testing.assert_close(grad_uu, grad_pos + grad_neg, rtol=1e-5, atol=0.0)
    # the positive part (negative partial risk) is multiplied by lam, the negative part passes unchanged
    torch.testing.assert_close(grad_robust, grad_neg + lam * grad_pos, rtol=1e-5, atol=1e-9)
    from_negative_partial = grad_robust - grad_neg
    assert torch.all(torch.sign(from_negative_partial) == -torch.sign(grad_pos))       # reversed
    torch.testing.assert_close(from_negative_partial.abs(), abs(lam) * grad_pos.abs(), rtol=1e-3, atol=1e-9)
    # the value: the negative partial risk becomes a penalty lam * partial >= 0
    pos, neg = uu_partial_risks(logits, pseudo, PRIOR, THETA_P, THETA_N)
    robust = robust_uu_risk(logits, pseudo, PRIOR, THETA_P, THETA_N, lam=lam)
    assert float(robust) == pytest.approx(float(lam * pos + neg), rel=1e-6)
    assert float(lam * pos) > 0


def test_default_lambda_is_minus_one_thousandth_and_risk_for_passes_it():
    logits, pseudo = _overfitting_batch()
    grad_pos = _grad(lambda z: uu_partial_risks(z, pseudo, PRIOR, THETA_P, THETA_N)[0], logits)
    grad_neg = _grad(lambda z: uu_partial_risks(z, pseudo, PRIOR, THETA_P, THETA_N)[1], logits)
    for fn in (lambda z: robust_uu_risk(z, pseudo, PRIOR, THETA_P, THETA_N),
               lambda z: risk_for("robust_uu", PRIOR, THETA_P, THETA_N)(z, pseudo)):
        torch.testing.assert_close(_grad(fn, logits), grad_neg - 0.001 * grad_pos, rtol=1e-5, atol=1e-9)
    custom = _grad(lambda z: risk_for("robust_uu", PRIOR, THETA_P, THETA_N, lam=-0.2)(z, pseudo), logits)
    torch.testing.assert_close(custom, grad_neg - 0.2 * grad_pos, rtol=1e-5, atol=1e-9)


def test_nnuu_zeroes_gradient_of_negative_partial():
    logits, pseudo = _overfitting_batch()
    grad_neg = _grad(lambda z: uu_partial_risks(z, pseudo, PRIOR, THETA_P, THETA_N)[1], logits)
    for fn in (lambda z: robust_uu_risk(z, pseudo, PRIOR, THETA_P, THETA_N, lam=0.0),
               lambda z: risk_for("nnuu", PRIOR, THETA_P, THETA_N)(z, pseudo)):
        torch.testing.assert_close(_grad(fn, logits), grad_neg, rtol=1e-5, atol=0.0)
    _, neg = uu_partial_risks(logits, pseudo, PRIOR, THETA_P, THETA_N)
    nnuu = robust_uu_risk(logits, pseudo, PRIOR, THETA_P, THETA_N, lam=0.0)
    assert float(nnuu) == pytest.approx(float(neg), rel=1e-6)


def test_robust_uu_gradient_step_pushes_negative_partial_back_up():
    logits, pseudo = _overfitting_batch()
    z = logits.clone().requires_grad_(True)
    pos, _ = uu_partial_risks(z, pseudo, PRIOR, THETA_P, THETA_N)
    leaky_correction(pos, -0.001).backward()
    pos = pos.detach()
    stepped = logits - 100.0 * z.grad             # one gradient-descent step on the corrected term
    pos_after, _ = uu_partial_risks(stepped, pseudo, PRIOR, THETA_P, THETA_N)
    assert float(pos_after) > float(pos)
    # plain UU descent drives the same partial risk further below zero
    z2 = logits.clone().requires_grad_(True)
    uu_partial_risks(z2, pseudo, PRIOR, THETA_P, THETA_N)[0].backward()
    pos_plain, _ = uu_partial_risks(logits - 0.1 * z2.grad, pseudo, PRIOR, THETA_P, THETA_N)
    assert float(pos_plain) < float(pos)


@pytest.mark.parametrize("lam", [-0.001, 0.0, -1.0, 0.5])
def test_leaky_correction_identity_on_positive_and_scales_negative(lam):
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(50, generator=gen) + 1e-3).requires_grad_(True)
    out = leaky_correction(x, lam)
    assert torch.equal(out, x.detach())
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))

    neg = (-torch.rand(50, generator=gen) - 1e-3).requires_grad_(True)
    out = leaky_correction(neg, lam)
    torch.testing.assert_close(out, lam * neg.detach())
    out.sum().backward()
    torch.testing.assert_close(neg.grad, torch.full_like(neg, lam))


# --------------------------------------------------------------------------------------------------------------
# 4. A batch missing one pseudo-class is refused (except by PN); bad names and bad thetas are refused
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [0.0, 1.0])
def test_batch_missing_a_pseudo_class_raises(cls):
    logits = torch.randn(16, generator=torch.Generator().manual_seed(0))
    pseudo = torch.full((16,), cls)
    with pytest.raises(MissingPseudoClassError):
        uu_risk(logits, pseudo, 0.4, 0.8, 0.2)
    with pytest.raises(MissingPseudoClassError):
        robust_uu_risk(logits, pseudo, 0.4, 0.8, 0.2)
    with pytest.raises(MissingPseudoClassError):
        uu_partial_risks(logits, pseudo, 0.4, 0.8, 0.2)
    for name in ("uu", "nnuu", "robust_uu"):
        with pytest.raises(MissingPseudoClassError):
            risk_for(name, 0.4, 0.8, 0.2)(logits, pseudo)
    # PN trusts the pseudo-labels and needs no second set
    expected = (torch.sigmoid(-logits) if cls == 1.0 else torch.sigmoid(logits)).mean()
    for risk in (pn_risk(logits, pseudo), risk_for("pn", 0.4, 0.8, 0.2)(logits, pseudo)):
        assert torch.isfinite(risk)
        assert float(risk) == pytest.approx(float(expected), rel=1e-6)
    assert issubclass(MissingPseudoClassError, ValueError)


def test_risk_for_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown loss"):
        risk_for("pu", 0.4, 0.8, 0.2)
    assert set(LOSSES) == {"robust_uu", "uu", "nnuu", "pn"}


@pytest.mark.parametrize("theta_p,theta_n", [(0.5, 0.5), (0.3, 0.6), (0.0, 0.0)])
def test_uu_coefficients_reject_non_positive_delta(theta_p, theta_n):
    with pytest.raises(ValueError, match="theta_p > theta_n"):
        uu_coefficients(0.4, theta_p, theta_n)
    logits, pseudo = _random_batch(0)
    with pytest.raises(ValueError):
        uu_risk(logits, pseudo, 0.4, theta_p, theta_n)
    with pytest.raises(ValueError):
        robust_uu_risk(logits, pseudo, 0.4, theta_p, theta_n)


def test_uu_coefficients_reject_nan_theta():
    with pytest.raises(ValueError):
        uu_coefficients(0.4, float("nan"), 0.2)


# --------------------------------------------------------------------------------------------------------------
# 5. Stratified batches hold both pseudo-classes
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,pos_share,batch_size,seed", [(1000, 0.3, 64, 0), (257, 0.5, 16, 1), (90, 0.9, 32, 2)])
def test_stratified_batches_cover_every_item_once_with_both_classes(n, pos_share, batch_size, seed):
    rng = np.random.default_rng(seed)
    pseudo = (rng.random(n) < pos_share).astype(int)
    batches = stratified_batches(pseudo, batch_size, seed)
    for batch in batches:
        assert (pseudo[batch] == 1).any() and (pseudo[batch] == 0).any()
        assert len(batch) <= batch_size
    # both classes outnumber the batches here: every item once per epoch, plus at most one reused item
    # (a last batch of a single item gets a partner of the other class)
    counts = np.bincount(np.concatenate(batches), minlength=n)
    assert np.all(counts >= 1) and counts.sum() - n <= 1
    assert len(batches) == int(np.ceil(counts.sum() / batch_size))


@pytest.mark.parametrize("minority_class", [0, 1])
def test_stratified_batches_reuse_a_small_minority(minority_class):
    n, batch_size = 100, 10                          # 10 batches, only 3 minority items
    rng = np.random.default_rng(5)
    pseudo = np.full(n, 1 - minority_class)
    minority = rng.choice(n, 3, replace=False)
    pseudo[minority] = minority_class
    batches = stratified_batches(pseudo, batch_size, 11)
    for batch in batches:
        assert (pseudo[batch] == 1).any() and (pseudo[batch] == 0).any()
        assert (pseudo[batch] == minority_class).sum() == 1
    counts = np.bincount(np.concatenate(batches), minlength=n)
    majority = np.flatnonzero(pseudo != minority_class)
    assert np.all(counts[majority] == 1)              # majority items: exactly once per epoch
    assert np.all(counts[minority] >= 1)              # minority items: all used, some reused
    assert counts[minority].sum() == len(batches) > 3


def test_stratified_batches_are_seeded():
    pseudo = (np.random.default_rng(0).random(200) < 0.4).astype(int)
    first = stratified_batches(pseudo, 32, 3)
    again = stratified_batches(pseudo, 32, 3)
    other = stratified_batches(pseudo, 32, 4)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


@pytest.mark.parametrize("cls", [0, 1])
def test_stratified_batches_raise_when_a_class_is_absent(cls):
    with pytest.raises(MissingPseudoClassError):
        stratified_batches(np.full(50, cls), 8, 0)


# --------------------------------------------------------------------------------------------------------------
# 6. Every risk is a scalar tensor with finite gradients
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LOSSES)
def test_risks_are_scalars_with_finite_gradients(name):
    logits, pseudo = _random_batch(4, n=40, scale=5.0)
    weight = torch.nn.Parameter(torch.tensor(1.5))
    risk = risk_for(name, 0.4, 0.75, 0.2)(weight * logits, pseudo)
    assert isinstance(risk, torch.Tensor) and risk.dim() == 0 and torch.isfinite(risk)
    risk.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad)
    z = logits.clone().requires_grad_(True)
    risk_for(name, 0.4, 0.75, 0.2)(z, pseudo).backward()
    assert z.grad is not None and torch.all(torch.isfinite(z.grad)) and z.grad.abs().sum() > 0


def test_partial_risks_are_scalars_and_accept_column_logits():
    logits, pseudo = _random_batch(5)
    flat = uu_partial_risks(logits, pseudo, 0.4, 0.75, 0.2)
    column = uu_partial_risks(logits.unsqueeze(-1), pseudo, 0.4, 0.75, 0.2)   # a head's (n, 1) output
    for f, c in zip(flat, column):
        assert f.dim() == 0 and c.dim() == 0
        assert float(f) == pytest.approx(float(c), rel=1e-6)
    for fn in (uu_risk, robust_uu_risk):
        assert fn(logits.unsqueeze(-1), pseudo, 0.4, 0.75, 0.2).dim() == 0
