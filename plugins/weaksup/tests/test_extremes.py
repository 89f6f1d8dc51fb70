"""Every weak-supervision risk and loss at extreme scores: a finite value and a finite gradient at margins and
logit gaps up to 1e4 in fp32 and at +-3e4 in fp16 / bf16 (one NaN gradient ends a run)."""

import pytest
import torch
from aipflow_weaksup.risks.complementary import complementary_loss
from aipflow_weaksup.risks.pairs import pcomp_risk, sd_risk, su_risk
from aipflow_weaksup.risks.partial import PartialLabelLoss, cc_loss
from aipflow_weaksup.risks.pu import pn_risk, pnu_risk, pu_risk
from aipflow_weaksup.risks.uu import pconf_risk, uu_risk

FP32_GAPS = [10.0, 100.0, 1e3, 1e4]
HALF = [torch.float16, torch.bfloat16]


def margins(gap, dtype=torch.float32):
    return torch.tensor([gap, -gap, gap / 2, -gap / 3, 0.0, gap, -gap, 1.0], dtype=dtype)


def binary_risks(loss):
    pu_labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    pn_labels = torch.tensor([1, -1, 1, -1, 1, -1, 1, -1])
    pnu_labels = torch.tensor([1, -1, 0, 0, 1, 0, -1, 0])
    conf = torch.tensor([0.9, 0.1, 0.5, 0.3, 1.0, 0.7, 0.2, 0.6])
    risks = {
        **{
            f"pu_{est}": lambda s, est=est: pu_risk(s, pu_labels, 0.4, loss, est).objective
            for est in ("upu", "nnpu", "abspu")
        },
        "pn": lambda s: pn_risk(s, pn_labels, 0.4, loss).objective,
        "pnu": lambda s: pnu_risk(s, pnu_labels, 0.4, 0.5, loss).objective,
        "su": lambda s: su_risk(s[:4], s[4:], 0.3, loss).objective,
        "sd": lambda s: sd_risk(s[:4], s[4:], 0.3, loss).objective,
        "pcomp_relu": lambda s: pcomp_risk(s[:4], s[4:], 0.6, loss, "relu").objective,
        "nnuu_abs": lambda s: uu_risk(s[:4], s[4:], 0.8, 0.3, 0.5, loss, "abs").objective,
        "pconf": lambda s: pconf_risk(s, conf, 0.5, loss).objective,
    }
    return risks


def value_and_grad(fn, scores):
    scores = scores.clone().requires_grad_(True)
    value = fn(scores)
    (grad,) = torch.autograd.grad(value, scores)
    return value.detach(), grad


@pytest.mark.parametrize("loss", ["sigmoid", "logistic", "squared"])
@pytest.mark.parametrize("gap", FP32_GAPS)
def test_binary_risks_fp32(loss, gap):
    for name, fn in binary_risks(loss).items():
        value, grad = value_and_grad(fn, margins(gap))
        assert torch.isfinite(value), f"{name} ({loss}) at margin {gap}: {value}"
        assert torch.isfinite(grad).all(), f"{name} ({loss}) at margin {gap}: gradient {grad}"


@pytest.mark.parametrize("loss", ["sigmoid", "logistic", "squared"])  # scored in fp32: 1e9 fits
@pytest.mark.parametrize("dtype", HALF)
def test_binary_risks_half(loss, dtype):
    for name, fn in binary_risks(loss).items():
        value, grad = value_and_grad(fn, margins(3e4, dtype))
        assert torch.isfinite(value), f"{name} ({loss}, {dtype}): {value}"
        assert torch.isfinite(grad).all(), f"{name} ({loss}, {dtype}): gradient {grad}"


def logits_batch(gap, dtype=torch.float32, k=4):
    rows = []
    for top in range(k):
        z = torch.zeros(k, dtype=torch.float64)
        z[top], z[(top + 1) % k] = gap, -gap
        rows += [z.clone(), z.clone()]
    return torch.stack(rows).to(dtype)


def multiclass_losses():
    n, k = 8, 4
    comp = torch.tensor([1, 2, 3, 0, 2, 3, 0, 1])  # never the row's top class; half are its bottom class
    comp_sets = torch.zeros(n, k)
    comp_sets[torch.arange(n), comp] = 1
    comp_sets[torch.arange(n), (comp + 1) % k] = 1
    candidates = torch.zeros(n, k)
    candidates[torch.arange(n), torch.arange(n) % k] = 1  # the row's top class ...
    candidates[torch.arange(n), (torch.arange(n) + 1) % k] = 1  # ... and its bottom class
    index = torch.arange(n)
    losses = {
        f"complementary_{kind}": lambda z, kind=kind: complementary_loss(z, comp, kind)[0]
        for kind in ("scl_nl", "scl_exp", "pc", "forward")
    }
    losses |= {
        f"complementary_unbiased_{c}": lambda z, c=c: complementary_loss(z, comp, "unbiased", c)[0]
        for c in ("free", "max", "ga")
    }
    losses |= {
        f"multiple_{kind}": lambda z, kind=kind: complementary_loss(z, comp_sets, kind)[0]
        for kind in ("unbiased", "ub_exp", "ub_log")
    }
    losses["partial_cc"] = lambda z: cc_loss(z, candidates)
    for kind in ("proden", "rc", "lws"):
        module = PartialLabelLoss(kind, num_samples=n)
        losses[f"partial_{kind}"] = lambda z, m=module: m(z, candidates, index=index)
    return losses


@pytest.mark.parametrize("gap", FP32_GAPS)
def test_multiclass_losses_fp32(gap):
    for name, fn in multiclass_losses().items():
        value, grad = value_and_grad(fn, logits_batch(gap))
        assert torch.isfinite(value), f"{name} at gap {gap}: {value}"
        assert torch.isfinite(grad).all(), f"{name} at gap {gap}: gradient\n{grad}"


@pytest.mark.parametrize("dtype", HALF)
def test_multiclass_losses_half(dtype):
    for name, fn in multiclass_losses().items():
        value, grad = value_and_grad(fn, logits_batch(3e4, dtype))
        assert torch.isfinite(value), f"{name} in {dtype}: {value}"
        assert torch.isfinite(grad).all(), f"{name} in {dtype}: gradient"
