"""Every core loss at extreme logits: a finite value and a finite gradient at logit gaps up to 1e4 in fp32 and at
the ends of the fp16 / bf16 ranges, and equal to the float64 formulas of the papers (tests/losses/test_losses.py)
wherever float64 can represent the probabilities.

The failure this guards against: ``p_y.pow(q)`` has gradient ``q p_y^(q-1) = inf`` at an underflowed ``p_y = 0``,
times the softmax Jacobian's 0, which is NaN, and one NaN gradient ends a run."""

import numpy as np
import pytest
import torch

from aipflow import losses as L
from tests.losses import test_losses as formulas

K = 4
T = torch.tensor(formulas.T)


def make_losses():
    """name -> (module, float64 per-sample formula or None)."""
    return {
        "GCE": (L.GCE(), formulas.f_gce),
        "TruncatedGCE": (L.TruncatedGCE(), formulas.f_tgce),
        "MAE": (L.MAE(), formulas.f_mae),
        "SCE": (L.SCE(), formulas.f_sce),
        "NCE": (L.NCE(), formulas.f_nce),
        "NFL": (L.NFL(), formulas.f_nfl),
        "NCERCE": (L.NCERCE(), lambda p, y: formulas.f_nce(p, y) + formulas.f_rce(p, y)),
        "NFLRCE": (L.NFLRCE(), lambda p, y: formulas.f_nfl(p, y) + formulas.f_rce(p, y)),
        "NCEMAE": (L.NCEMAE(), lambda p, y: formulas.f_nce(p, y) + formulas.f_mae(p, y)),
        "BootstrapSoft": (L.BootstrapSoft(), formulas.f_boot_soft),
        "BootstrapHard": (L.BootstrapHard(), formulas.f_boot_hard),
        "LabelSmoothing": (L.LabelSmoothing(), formulas.f_ls),
        "NegativeLabelSmoothing": (L.LabelSmoothing(-0.2), lambda p, y: formulas.f_ls(p, y, -0.2)),
        "ForwardCorrection": (L.ForwardCorrection(T.tolist()), formulas.f_forward),
        "BackwardCorrection": (L.BackwardCorrection(T.tolist()), None),
        "TRevision": (L.TRevision(T.tolist()), None),
        "ELR": (L.ELR(num_samples=2 * K), None),
    }


NAMES = list(make_losses())


def extreme_batch(gap: float, dtype=torch.float32):
    """Each class as the label of a row whose top logit is +gap on every class in turn and -gap on another: the
    label's probability is ~1, ~0 (underflowed), or in between."""
    rows, labels = [], []
    for top in range(K):
        z = torch.zeros(K, dtype=torch.float64)
        z[top] = gap
        z[(top + 1) % K] = -gap
        for y in (top, (top + 1) % K):
            rows.append(z.clone())
            labels.append(y)
    return torch.stack(rows).to(dtype), torch.tensor(labels)


def value_and_grad(loss, logits, target):
    logits = logits.clone().requires_grad_(True)
    index = torch.arange(len(target))
    out = loss(logits, target, index=index) if getattr(loss, "needs_index", False) else loss(logits, target)
    (grad,) = torch.autograd.grad(out, logits)
    return out.detach(), grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("gap", [10.0, 50.0, 100.0, 1e3, 1e4])
def test_fp32_value_and_gradient_are_finite(name, gap):
    loss, _ = make_losses()[name]
    value, grad = value_and_grad(loss, *extreme_batch(gap))
    assert torch.isfinite(value), f"{name} at gap {gap}: loss {value}"
    assert torch.isfinite(grad).all(), f"{name} at gap {gap}: non-finite gradient\n{grad}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_range_ends_are_finite(name, dtype):
    # +gap and -gap in one row: fp16's whole range. bf16 shares fp32's exponent range, where a cross-entropy-type
    # loss of a label at -1.7e38 is itself ~3e38 and a batch mean overflows fp32 by arithmetic; there the test
    # takes the same gap as fp16, where bf16's 8-bit mantissa is the extreme
    gap = torch.finfo(torch.float16).max / 2
    loss, _ = make_losses()[name]
    value, grad = value_and_grad(loss, *extreme_batch(gap, dtype))
    assert torch.isfinite(value), f"{name} in {dtype}: loss {value}"
    assert grad.dtype == dtype and torch.isfinite(grad).all(), f"{name} in {dtype}: non-finite gradient"


@pytest.mark.parametrize("name", [n for n in NAMES if make_losses()[n][1] is not None])
@pytest.mark.parametrize("gap", [10.0, 50.0, 100.0])
def test_fp32_equals_the_float64_formula_where_representable(name, gap):
    # gap 100: probabilities down to e^-200 ~ 1e-87, representable in float64, not in fp32
    loss, formula = make_losses()[name]
    logits, target = extreme_batch(gap)
    p = formulas.softmax(logits.double().numpy())
    want = np.mean([formula(p[i], int(target[i])) for i in range(len(target))])
    value, grad = value_and_grad(loss, logits, target)
    assert abs(float(value) - want) <= 1e-5 * max(1.0, abs(want)), f"{name} at gap {gap}: {float(value)} vs {want}"
    # the fp32 gradient against the same loss evaluated in float64 (itself checked by gradcheck in test_losses)
    _, grad64 = value_and_grad(loss, logits.double(), target)
    assert torch.allclose(grad.double(), grad64, atol=1e-6, rtol=1e-4), f"{name} at gap {gap}"


def test_gce_gradient_at_an_underflowed_label_probability_is_zero_not_nan():
    # the case from the field: logits [[100, 0, -100]] with target 2 (p_y = e^-200 = 0 in fp32)
    logits = torch.tensor([[100.0, 0.0, -100.0]], requires_grad=True)
    L.gce_loss(logits, torch.tensor([2])).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().max() < 1e-30
