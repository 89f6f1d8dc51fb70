"""The compiled Triton kernels on a GPU (skipped without CUDA): bf16 (wrongly rounded by the CPU interpreter),
fp16 and fp32 against torch references on the device, and the launch count of a fused SAM step."""

import functools

import pytest
import torch

from aipflow.kernels import bsam, descent, ivon, noise, sam
from aipflow.optim import SAM, functional

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
SHAPES = [(5,), (1000,), (4097,), (1,), (333, 77), (8, 3, 3, 3)]
TOL = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def tensors(dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return [(torch.randn(s, generator=g, device="cuda") * (1 + i)).to(dtype) for i, s in enumerate(SHAPES)]


def close(got, want, dtype):
    for a, b in zip(got, want, strict=True):
        bound = TOL[dtype] * (b.double().abs().max().item() + 1.0)
        assert (a.double() - b.double()).abs().max().item() <= bound


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("adaptive", [False, True])
def test_perturb_on_gpu(dtype, adaptive):
    ps, gs = tensors(dtype), tensors(dtype, 1)
    want = [p.clone() for p in ps]
    functional.sam_perturb(want, gs, [torch.empty_like(p) for p in ps], 0.05, adaptive, 0.01, "reference")
    out = [torch.empty_like(p) for p in ps]
    sam.sam_perturb(ps, gs, out, 0.05, adaptive, 0.01)
    close(out, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_descent_on_gpu(dtype):
    ps, gs = tensors(dtype), tensors(dtype, 1)
    ref = [p.float().clone().requires_grad_(True) for p in ps]
    for p, g in zip(ref, gs):
        p.grad = g.float()
    torch.optim.AdamW(ref, lr=0.01, weight_decay=0.05).step()
    m = [torch.zeros_like(p, dtype=torch.float32) for p in ps]
    v = [torch.zeros_like(p, dtype=torch.float32) for p in ps]
    descent.adam_step(ps, gs, m, v, lr=0.01, weight_decay=0.05, step=1)
    close(ps, [p.detach() for p in ref], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bayesian_ops_on_gpu(dtype):
    means = tensors(dtype)
    s = [torch.rand(p.shape, device="cuda") + 0.5 for p in means]
    z = noise.normal_like(means, seed=9)
    want = [p.clone() for p in means]
    functional.bsam_noisy_point(want, means, s, z, 256.0)
    got = [torch.empty_like(p) for p in means]
    bsam.bsam_noisy_point(got, means, s, 256.0, seed=9)
    close(got, want, dtype)
    sample = [torch.empty_like(p) for p in means]
    ivon.ivon_sample(sample, means, s, 100.0, 1e-3, seed=9)
    close(sample, [(m.float() + e / torch.sqrt(100.0 * (h + 1e-3))).to(dtype) for m, e, h in zip(means, z, s)], dtype)
    flat = torch.cat([x.flatten() for x in z]).double()
    assert abs(flat.mean().item()) < 0.05 and abs(flat.var().item() - 1) < 0.05


def test_fused_sam_step_launches_five_kernels():
    # the squared norm, the sum of its partials, its root (returned), the perturbation, the fused SGD step with
    # the restore: README says five
    from torch.profiler import ProfilerActivity, profile

    params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in SHAPES * 40]  # 240 tensors
    for p in params:
        p.grad = torch.randn_like(p)
    opt = SAM(params, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), impl="triton")
    for _ in range(2):  # compile, create state
        opt.first_step()
        opt.second_step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        opt.first_step()
        opt.second_step()
        torch.cuda.synchronize()
    kernels = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(kernels) <= 5, kernels
