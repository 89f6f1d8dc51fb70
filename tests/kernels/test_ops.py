"""Each kernel against an independent plain-torch reference (aipflow.optim.functional's reference path or
torch.optim itself), through Triton's CPU interpreter: fp32 <= 1e-6, fp16 within a stated tolerance."""

import pytest

from tests.kernels._requirements import require_triton_interpreter

require_triton_interpreter()

import torch

from aipflow.kernels import _multi_tensor as mt
from aipflow.kernels import bsam, descent, ivon, langevin, noise, norm, sam
from aipflow.optim import functional

# odd sizes, sizes not multiple of the block (16) or chunk (64), a one-element tensor, a 2-D and a 4-D tensor
SHAPES = [(5,), (64,), (65,), (1,), (33, 7), (2, 3, 4, 5)]
# fp16: one rounding of an fp32 result vs the reference's own fp16 arithmetic
TOL = {torch.float32: 1e-6, torch.float16: 2e-3}


def tensors(dtype=torch.float32, seed=0, scale=1.0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    # non-uniform magnitudes across tensors
    return [(torch.randn(s, generator=g) * scale * (1 + i)).to(dtype) for i, s in enumerate(shapes)]


def assert_close(got, want, dtype=torch.float32, rel=True):
    for a, b in zip(got, want, strict=True):
        a, b = a.double(), b.double()
        bound = TOL[dtype] * (b.abs().max().item() + 1.0) if rel else TOL[dtype]
        assert (a - b).abs().max().item() <= bound, (a - b).abs().max().item()


# --------------------------------------------------------------------------------------------- launch plan
def test_plan_covers_every_element_once():
    shapes = [(5,), (64,), (65,), (0,), (130,)]
    ts = [torch.zeros(s) for s in shapes]
    p = mt.plan([ts], philox_offset=10)
    table = p.table
    covered = {i: [] for i in range(len(ts))}
    base = ts[0].data_ptr()
    for off, glob, count in table.tolist():
        addr = base + off * 4
        i = next(k for k, t in enumerate(ts) if t.data_ptr() <= addr < t.data_ptr() + max(t.numel(), 1) * 4)
        start = (addr - ts[i].data_ptr()) // 4
        covered[i].append((start, count))
        assert glob == 10 + sum(t.numel() for t in ts[:i]) + start
    for i, t in enumerate(ts):
        spans = sorted(covered[i])
        assert sum(c for _, c in spans) == t.numel()
        assert all(c <= 64 for _, c in spans)
        assert all(a + c == b for (a, c), (b, _) in zip(spans, spans[1:]))


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="not contiguous"):
        mt.plan([[torch.zeros(4, 4).t()]])
    with pytest.raises(ValueError, match="shape"):
        mt.plan([[torch.zeros(3)], [torch.zeros(4)]])
    with pytest.raises(ValueError, match="has 2 tensors"):
        mt.plan([[torch.zeros(3)], [torch.zeros(3), torch.zeros(3)]])


def test_one_launch_per_dtype_group(monkeypatch):
    calls = []
    real = mt.plan

    def counting(lists, philox_offset=0):
        calls.append(lists[0][0].dtype)
        return real(lists, philox_offset)

    monkeypatch.setattr(sam, "plan", counting)
    monkeypatch.setattr(norm, "plan", counting)
    ps = tensors() + tensors(torch.float16, seed=1)
    gs = tensors(seed=2) + tensors(torch.float16, seed=3)
    sam.sam_perturb(ps, gs, [torch.empty_like(p) for p in ps], 0.05)
    assert sorted(map(str, calls)) == sorted(["torch.float32", "torch.float16"] * 2)  # norm + perturb, 2 groups


# ---------------------------------------------------------------------------------------------------- norm
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("adaptive", [False, True])
def test_global_norm(dtype, adaptive):
    ps, gs = tensors(dtype), tensors(dtype, seed=1)
    want = functional.sam_scale_norm(ps, gs, adaptive, 0.01, "reference")
    got = norm.global_norm(gs, ps, adaptive, 0.01)
    assert abs(got.item() - want.item()) <= 1e-6 * want.item()


def test_global_norm_mixed_dtypes_and_grad_scale():
    gs = tensors() + tensors(torch.float16, seed=1)
    exact = torch.cat([g.double().flatten() for g in gs]).norm().item()
    assert abs(norm.global_norm(gs).item() - exact) <= 1e-6 * exact
    scaled = [(g.float() * 1024).to(g.dtype) for g in gs]
    got = norm.global_norm(scaled, grad_scale=torch.tensor(1024.0)).item()
    assert abs(got - exact) <= 1e-6 * exact


# ------------------------------------------------------------------------------------------------- perturb
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("mode", ["swap", "copy"])
def test_sam_perturb(dtype, adaptive, mode):
    ps, gs = tensors(dtype), tensors(dtype, seed=1)
    original = [p.clone() for p in ps]
    want = [p.clone() for p in ps]
    functional.sam_perturb(want, gs, [torch.empty_like(p) for p in ps], 0.05, adaptive, 0.01, "reference")
    out = [torch.empty_like(p) for p in ps]
    got_norm = sam.sam_perturb(ps, gs, out, 0.05, adaptive, 0.01, mode=mode)
    moved, kept = (out, ps) if mode == "swap" else (ps, out)
    assert all(torch.equal(a, b) for a, b in zip(kept, original))  # the original weights, bit for bit
    assert_close(moved, want, dtype)
    assert got_norm.item() > 0


def test_sam_perturb_zero_gradient_and_grad_scale():
    ps = tensors()
    out = [torch.empty_like(p) for p in ps]
    sam.sam_perturb(ps, [torch.zeros_like(p) for p in ps], out, 0.05)
    assert all(torch.equal(a, b) for a, b in zip(out, ps))  # e = 0, no NaN
    gs = tensors(seed=1)
    plain = [torch.empty_like(p) for p in ps]
    sam.sam_perturb(ps, gs, plain, 0.05)
    scaled = [torch.empty_like(p) for p in ps]
    sam.sam_perturb(ps, [g * 256 for g in gs], scaled, 0.05, grad_scale=torch.tensor(256.0))
    assert_close(scaled, plain)


# ------------------------------------------------------------------------------------------------- descent
def torch_steps(opt_cls, ps, grad_list, **kw):
    params = [p.clone().requires_grad_(True) for p in ps]
    opt = opt_cls(params, foreach=False, **kw)
    for gs in grad_list:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9, weight_decay=5e-4),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.8, dampening=0.1, maximize=True),
]


@pytest.mark.parametrize("kw", SGD_CASES, ids=["plain", "momentum-wd", "nesterov", "dampening-maximize"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sgd_matches_torch(kw, dtype):
    ps = tensors(dtype)
    grad_list = [tensors(dtype, seed=s) for s in (1, 2, 3)]
    want = torch_steps(torch.optim.SGD, [p.float() for p in ps], [[g.float() for g in gs] for gs in grad_list], **kw)
    w = [p.clone() for p in ps]
    bufs = [torch.empty_like(p, dtype=torch.float32) for p in ps]
    full = dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False) | kw
    for i, gs in enumerate(grad_list):
        descent.sgd_step(w, gs, bufs if full["momentum"] else None, first=i == 0, **full)
    assert_close(w, want, dtype)


@pytest.mark.parametrize("cls", [torch.optim.AdamW, torch.optim.Adam])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_adam_matches_torch(cls, dtype):
    kw = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05, maximize=cls is torch.optim.Adam)
    ps = tensors(dtype)
    grad_list = [tensors(dtype, seed=s) for s in (1, 2, 3)]
    want = torch_steps(cls, [p.float() for p in ps], [[g.float() for g in gs] for gs in grad_list], **kw)
    w = [p.clone() for p in ps]
    m = [torch.zeros_like(p, dtype=torch.float32) for p in ps]
    v = [torch.zeros_like(p, dtype=torch.float32) for p in ps]
    for t, gs in enumerate(grad_list, start=1):
        descent.adam_step(
            w, gs, m, v, lr=0.01, beta1=0.9, beta2=0.99, weight_decay=0.05, step=t,
            decoupled=cls is torch.optim.AdamW, maximize=kw["maximize"],
        )  # fmt: skip
    assert_close(w, want, dtype)


def test_descent_restores_from_backups_and_skips_on_inf():
    ps, gs = tensors(), tensors(seed=1)
    want = torch_steps(torch.optim.SGD, ps, [gs], lr=0.1, momentum=0.9)
    perturbed = [p + 1.0 for p in ps]
    bufs = [torch.empty_like(p) for p in ps]
    descent.sgd_step(perturbed, gs, bufs, lr=0.1, momentum=0.9, first=True, backups=ps)
    assert_close(perturbed, want)
    # found_inf: weights come back from the backups exactly, the state is untouched
    w = [p + 1.0 for p in ps]
    m = [torch.full_like(p, 0.5) for p in ps]
    v = [torch.full_like(p, 0.25) for p in ps]
    descent.adam_step(w, gs, m, v, lr=0.1, step=3, backups=ps, found_inf=torch.tensor([1.0]))
    assert all(torch.equal(a, b) for a, b in zip(w, ps))
    assert all((x == 0.5).all() for x in m) and all((x == 0.25).all() for x in v)
    w = [p.clone() for p in ps]
    descent.sgd_step(w, gs, None, lr=0.1, found_inf=torch.tensor(2.0))
    assert all(torch.equal(a, b) for a, b in zip(w, ps))


def test_descent_grad_scale_and_fused_clipping():
    ps, gs = tensors(), tensors(seed=1, scale=10.0)
    params = [p.clone().requires_grad_(True) for p in ps]
    for p, g in zip(params, gs):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    torch.optim.SGD(params, lr=0.1, momentum=0.9).step()
    scaled = [g * 64 for g in gs]
    scale = torch.tensor(64.0)
    w = [p.clone() for p in ps]
    coef = descent.clip_coefficient(scaled, 1.0, grad_scale=scale)
    descent.sgd_step(
        w, scaled, [torch.empty_like(p) for p in ps], lr=0.1, momentum=0.9, first=True, grad_scale=scale,
        clip_coef=coef,
    )  # fmt: skip
    assert_close(w, [p.detach() for p in params])


# ---------------------------------------------------------------------------------------------------- noise
def test_noise_is_deterministic_chunking_free_and_standard_normal():
    like = [torch.empty(300), torch.empty(7, 9)]
    a = noise.normal_like(like, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, noise.normal_like(like, seed=5)))
    assert not torch.equal(a[0], noise.normal_like(like, seed=6)[0])
    with mt.launch_config(chunk_size=32, block=32):
        assert all(torch.equal(x, y) for x, y in zip(a, noise.normal_like(like, seed=5)))
    # element i of the concatenation is randn(seed, offset + i)
    flat = noise.normal_like([torch.empty(363)], seed=5)[0]
    assert torch.equal(torch.cat([x.flatten() for x in a]), flat)
    assert torch.equal(noise.normal_like([torch.empty(10)], seed=5, offset=300)[0], flat[300:310])
    with mt.launch_config(chunk_size=4096, block=1024):
        z = noise.normal_like([torch.empty(32768)], seed=11)[0].double()
    assert abs(z.mean().item()) < 4 / 32768**0.5  # 4 standard errors
    assert abs(z.var().item() - 1) < 0.05
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < 0.03


# ----------------------------------------------------------------------------------------------------- bSAM
def test_bsam_ops_match_reference_fed_the_same_noise():
    means, gs = tensors(), tensors(seed=1)
    s = [torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) + 0.5 for p in means]
    z = noise.normal_like(means, seed=9, offset=4)
    want = [p.clone() for p in means]
    functional.bsam_noisy_point(want, means, s, z, 256.0)
    got = [torch.empty_like(p) for p in means]
    bsam.bsam_noisy_point(got, means, s, 256.0, seed=9, offset=4)
    assert_close(got, want)

    h_want, h_got = [torch.ones_like(p) for p in means], [torch.ones_like(p) for p in means]
    functional.bsam_perturbed_point(want, means, gs, s, h_want, 0.01, "reference")
    bsam.bsam_perturbed_point(got, means, gs, s, h_got, 0.01)
    assert_close(got, want)
    assert_close(h_got, h_want)

    args = dict(lr=0.1, beta1=0.9, beta2=0.999, damping=0.1, delta=40 / 256)

    def gbar0():
        return [torch.full_like(p, 0.1) for p in means]

    m_want, gbar_want, s_want = [p.clone() for p in means], gbar0(), [x.clone() for x in s]
    functional.bsam_update(m_want, gs, h_want, gbar_want, s_want, impl="reference", **args)
    m_got, gbar_got, s_got = [p + 3.0 for p in means], gbar0(), [x.clone() for x in s]
    bsam.bsam_update(m_got, gs, h_got, gbar_got, s_got, means=means, **args)  # restore fused in
    for got_, want_ in ((m_got, m_want), (gbar_got, gbar_want), (s_got, s_want)):
        assert_close(got_, want_)


# ----------------------------------------------------------------------------------------------------- IVON
@pytest.mark.parametrize("clip", [float("inf"), 0.05])
def test_ivon_ops_match_reference_fed_the_same_noise(clip):
    means, gs = tensors(), tensors(seed=1)
    h = [torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) + 0.1 for p in means]
    ess, wd = 100.0, 1e-3
    eps = noise.normal_like(means, seed=3, offset=7)
    sample = [torch.empty_like(p) for p in means]
    ivon.ivon_sample(sample, means, h, ess, wd, seed=3, offset=7)
    assert_close(sample, [m + e / torch.sqrt(ess * (hh + wd)) for m, e, hh in zip(means, eps, h)])

    h_hat_want = [g * e * torch.sqrt(ess * (hh + wd)) for g, e, hh in zip(gs, eps, h)]
    h_hat, g_sum = [torch.zeros_like(p) for p in means], [torch.zeros_like(p) for p in means]
    ivon.ivon_accumulate(gs, h, h_hat, ess, wd, seed=3, offset=7, g_sums=g_sum)
    assert_close(h_hat, h_hat_want)
    assert_close(g_sum, gs)

    # beta2 small, so that the (h - h_hat)^2 term counts
    kw = dict(lr=0.1, beta1=0.9, beta2=0.9, weight_decay=wd, step=3, clip_radius=clip)

    def mom0():
        return [torch.full_like(p, 0.2) for p in means]

    m_want, mom_want, h_want = [p.clone() for p in means], mom0(), [x.clone() for x in h]
    functional.ivon_update(m_want, gs, h_hat_want, mom_want, h_want, impl="reference", **kw)
    # materialised h_hat
    m1, mom1, h1 = [p.clone() for p in means], mom0(), [x.clone() for x in h]
    ivon.ivon_update(m1, gs, mom1, h1, h_hats=h_hat, **kw)
    # h_hat from the seed inside the update, the mean read from its saved copy
    m2, mom2, h2 = [p + 1.0 for p in means], mom0(), [x.clone() for x in h]
    ivon.ivon_update(m2, gs, mom2, h2, means=means, ess=ess, seed=3, offset=7, **kw)
    for m_, mom_, h_ in ((m1, mom1, h1), (m2, mom2, h2)):
        assert_close(m_, m_want)
        assert_close(mom_, mom_want)
        assert_close(h_, h_want)


# ------------------------------------------------------------------------------------------------- Langevin
@pytest.mark.parametrize("preconditioned", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_langevin_step_matches_reference_fed_the_same_noise(preconditioned, dtype):
    params, gs = tensors(dtype), tensors(dtype, seed=1)
    averages = [torch.rand(p.shape, generator=torch.Generator().manual_seed(2)) for p in params]
    z = noise.normal_like(params, seed=3, offset=11)
    kw = dict(lr=0.05, weight_decay=0.1, noise_variance=0.02, alpha=0.9, eps=1e-3)
    want, want_avg = [p.clone() for p in params], [v.clone() for v in averages]
    functional.langevin_update(want, gs, z, want_avg if preconditioned else None, impl="reference", **kw)
    got, got_avg = [p.clone() for p in params], [v.clone() for v in averages]
    end = langevin.langevin_step(got, gs, got_avg if preconditioned else None, seed=3, offset=11, **kw)
    assert end == 11 + sum(p.numel() for p in params)
    assert_close(got, want, dtype)
    if preconditioned:
        assert_close(got_avg, want_avg)
    # the noise is there: without it the step lands elsewhere
    quiet = [p.clone() for p in params]
    langevin.langevin_step(
        quiet, gs, [v.clone() for v in averages] if preconditioned else None, seed=3, **{**kw, "noise_variance": 0.0}
    )
    assert max((a.float() - b.float()).abs().max().item() for a, b in zip(got, quiet)) > 0.05


def test_langevin_step_gives_each_dtype_group_its_own_noise():
    params = [torch.zeros(100), torch.zeros(100, dtype=torch.float16)]
    grads = [torch.zeros(100), torch.zeros(100, dtype=torch.float16)]
    langevin.langevin_step(params, grads, None, lr=0.1, weight_decay=0.0, noise_variance=1.0, seed=5)
    assert not torch.allclose(params[0], params[1].float(), atol=1e-2)


def test_resolve_impl_names_what_blocks_triton():
    with pytest.raises(RuntimeError, match="contiguous"):
        functional.resolve_impl("triton", [torch.zeros(4, 4).t()])
    with pytest.raises(RuntimeError, match="dtype"):
        functional.resolve_impl("triton", [torch.zeros(4, dtype=torch.float64)])
    assert functional.resolve_impl("triton", [torch.zeros(4)]) == "triton"  # interpreter on CPU
    assert functional.resolve_impl("auto", [torch.zeros(4)]) == "foreach"  # auto picks Triton only on CUDA
