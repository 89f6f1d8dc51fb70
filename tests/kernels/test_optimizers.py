"""The optimizers with impl="triton" against impl="foreach" (itself checked against float64 re-derivations in
tests/optim): options the float64 tests do not cover, and the paths only the fused step has."""

import copy
import functools
import io

import pytest

from tests.kernels._requirements import require_triton_interpreter

require_triton_interpreter()

import torch
from torch import nn

from aipflow.kernels.noise import normal_like
from aipflow.optim import ASAM, BSAM, IVON, PSGLD, SAM, SGLD, functional


def problem(dtype=torch.float32, unused=False):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    if unused:
        model.extra = nn.Linear(3, 3)  # never in the forward: its grad stays None
    model = model.to(dtype)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=g).to(dtype), torch.randint(0, 3, (64,), generator=g)
    return model, x, y


def closure_for(opt, model, x, y, t, hooks=False):
    def run(k=None):
        opt.zero_grad()
        lo = (t * 16) % 64
        xb, yb = x[lo : lo + 16], y[lo : lo + 16]
        if k is not None:
            xb, yb = xb[k * 8 : (k + 1) * 8], yb[k * 8 : (k + 1) * 8]
        loss = nn.functional.cross_entropy(model(xb).float(), yb)
        loss.backward()
        return loss

    if hooks:  # what the Lightning integration hands: the optimizer must then keep h_hat and restore first
        run.descent_ready = lambda: None
        run.sync = lambda tensors: None
    return run


def train(make_opt, impl, steps=6, dtype=torch.float32, unused=False, hooks=False):
    model, x, y = problem(dtype, unused)
    opt = make_opt(model, impl)
    for t in range(steps):
        opt.step(closure_for(opt, model, x, y, t, hooks))
    return model, opt


def max_diff(a, b):
    return max((p.double() - q.double()).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def sam_with(base, **kw):
    def make(model, impl):
        groups = [
            {"params": model[0].parameters(), "lr": 0.05},
            {"params": [p for n, p in model.named_parameters() if not n.startswith("0.")]},
        ]
        return SAM(groups, base, impl=impl, **kw)

    return make


CASES = {
    "sgd-groups-unused": (sam_with(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True)), True),
    "adam-l2-maximize-off": (sam_with(functools.partial(torch.optim.Adam, lr=0.01, weight_decay=1e-2)), False),
    "adamw-clip": (sam_with(functools.partial(torch.optim.AdamW, lr=0.01), max_grad_norm=0.1), False),
    "rmsprop-unfused-base": (sam_with(functools.partial(torch.optim.RMSprop, lr=0.01)), False),
    "asam-interval": (
        lambda m, impl: ASAM(m.parameters(), functools.partial(torch.optim.SGD, lr=0.1), interval=2, impl=impl),
        False,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sam_triton_matches_foreach(case, monkeypatch):
    make, unused = CASES[case]
    a, _ = train(make, "foreach", unused=unused)
    b, _ = train(make, "triton", unused=unused)
    assert max_diff(a, b) <= 1e-6


def test_sam_copy_path_with_unused_parameter(monkeypatch):
    monkeypatch.setattr("aipflow.optim.functional.owns_storage", lambda p: False)
    make = sam_with(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    a, _ = train(make, "foreach", unused=True)
    b, _ = train(make, "triton", unused=True)
    assert max_diff(a, b) <= 1e-6


def test_sam_fp16_parameters():
    make = sam_with(functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    a, _ = train(make, "foreach", dtype=torch.float16)
    b, _ = train(make, "triton", dtype=torch.float16)
    assert max_diff(a, b) <= 5e-3  # fp16: the kernel rounds once from fp32, torch's fp16 SGD at every op
    assert b[0].weight.dtype == torch.float16


BAYES = {
    "bsam": lambda m, impl: BSAM(m.parameters(), lr=0.05, train_size=64, num_subbatches=2, seed=0, impl=impl),
    "ivon": lambda m, impl: IVON(m.parameters(), lr=0.05, ess=64, seed=0, impl=impl),
    "ivon-2-samples": lambda m, impl: IVON(m.parameters(), lr=0.05, ess=64, mc_samples=2, seed=0, impl=impl),
}


@pytest.mark.parametrize("name", list(BAYES))
def test_fused_and_hooked_paths_agree(name):
    """With integration hooks the step keeps h_hat and restores before the update; without, both are fused into
    the update kernel: the same noise (same seeds) must give the same weights."""
    a, _ = train(BAYES[name], "triton")
    b, _ = train(BAYES[name], "triton", hooks=True)
    assert max_diff(a, b) <= 1e-6


@pytest.mark.parametrize("name", ["bsam", "ivon"])
def test_triton_resume_reproduces_the_uninterrupted_run(name):
    full, _ = train(BAYES[name], "triton", steps=6)
    model, x, y = problem()
    opt = BAYES[name](model, "triton")
    for t in range(3):
        opt.step(closure_for(opt, model, x, y, t))
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2, _, _ = problem()
    model2.load_state_dict(ckpt["model"])
    opt2 = BAYES[name](model2, "triton")
    opt2.load_state_dict(copy.deepcopy(ckpt["opt"]))
    for t in range(3, 6):
        opt2.step(closure_for(opt2, model2, x, y, t))
    assert max_diff(full, model2) == 0.0


def test_bayesian_noise_depends_on_the_seed_only():
    a, oa = train(BAYES["ivon"], "triton", steps=2)
    b, ob = train(BAYES["ivon"], "triton", steps=2)
    assert max_diff(a, b) == 0.0 and oa.last_noise_seeds == ob.last_noise_seeds
    c, _ = train(lambda m, impl: IVON(m.parameters(), lr=0.05, ess=64, seed=1, impl=impl), "triton", steps=2)
    assert max_diff(a, c) > 0


def test_benchmark_script_runs(tmp_path):
    """benchmarks/kernel_throughput.py in its smoke mode (tiny sizes, CPU): the GPU run must not be the first run."""
    import importlib

    module = importlib.import_module("benchmarks.kernel_throughput")
    md = module.main(["--smoke", "--out", str(tmp_path)])
    text = md.read_text()
    assert "| smoke | 12 | triton |" in text and (tmp_path / "kernels.csv").exists()


@pytest.mark.parametrize("cls", [SGLD, PSGLD])
def test_langevin_triton_step_is_the_reference_step_with_the_kernels_philox_noise(cls):
    """Two groups (their Philox offsets follow one another), one seed per step drawn from the optimizer's CPU
    generator (seeded ``seed``), the noise regenerated by ``normal_like`` for the reference path."""
    model, x, y = problem()
    reference = copy.deepcopy(model)
    settings = ({"lr": 0.05, "weight_decay": 0.0}, {"lr": 0.02, "weight_decay": 0.1})
    groups = [{"params": list(model[i].parameters()), **kw} for i, kw in zip((0, 2), settings)]
    opt = cls(groups, train_size=64, seed=9, impl="triton")
    ref_groups = [list(reference[i].parameters()) for i in (0, 2)]
    averages = [[torch.zeros_like(p) for p in ps] for ps in ref_groups]
    seeds = torch.Generator().manual_seed(9)
    for t in range(3):
        opt.step(closure_for(opt, model, x, y, t))
        reference.zero_grad()
        lo = (t * 16) % 64
        nn.functional.cross_entropy(reference(x[lo : lo + 16]), y[lo : lo + 16]).backward()
        seed, offset = int(torch.randint(0, 2**31 - 1, (1,), generator=seeds)), 0
        with torch.no_grad():
            for ps, kw, avg in zip(ref_groups, settings, averages):
                noise = normal_like(ps, seed, offset)
                offset += sum(p.numel() for p in ps)
                functional.langevin_update(
                    ps,
                    [p.grad for p in ps],
                    noise,
                    avg if cls is PSGLD else None,
                    kw["lr"],
                    kw["weight_decay"],
                    2 * kw["lr"] / 64,
                    impl="reference",
                )
    assert max_diff(model, reference) < 1e-5
