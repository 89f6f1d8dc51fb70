"""GPU-only checks (skipped without CUDA): run by scripts/gpu_check.sh on a lent GPU machine."""

import functools

import pytest
import torch

from aipflow.optim import BSAM, IVON, SAM
from tests.lightning.helpers import CountingModule, loader, regression_data, trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)
FACTORIES = {
    "SAM": functools.partial(SAM, base_optimizer=SGD),
    "BSAM": functools.partial(BSAM, lr=0.05, num_subbatches=2, seed=0),
    "IVON": functools.partial(IVON, lr=0.05, seed=0),
}


@pytest.mark.parametrize("name", ["SAM", "BSAM", "IVON"])
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_trainer_on_gpu(name, precision):
    x, y = regression_data(256)
    model = CountingModule(FACTORIES[name], batch_norm=True)
    t = trainer(accelerator="gpu", precision=precision, max_epochs=2, gradient_clip_val=1.0)
    t.fit(model, loader(x, y, 32))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    steps = t.global_step
    assert model.counts["before_optimizer_step"] == steps and model.counts["clip"] == steps


@pytest.mark.parametrize("poisoned_call", [0, 1])
def test_fp16_inf_skips_the_step_on_gpu(poisoned_call):
    x, y = regression_data(32)
    model = CountingModule(FACTORIES["SAM"], inject_inf_on_call={poisoned_call})
    start = [p.detach().clone() for p in model.parameters()]
    t = trainer(accelerator="gpu", precision="16-mixed", max_steps=1)
    t.fit(model, loader(x, y, 32))
    assert all(torch.equal(a.cuda(), b) for a, b in zip(start, model.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_foreach_matches_reference_on_gpu(dtype):
    torch.manual_seed(0)
    shapes = [(257,), (64, 33), (3, 3, 16, 16)]
    for adaptive in (False, True):
        outs = []
        for impl in ("foreach", "reference"):
            params = [torch.nn.Parameter(torch.randn(s, device="cuda", generator=None).to(dtype)) for s in shapes]
            torch.manual_seed(1)
            for p in params:
                p.grad = torch.randn_like(p)
            opt = SAM(params, SGD, rho=0.1, adaptive=adaptive, impl=impl)
            opt.first_step()
            outs.append([p.detach().float().clone() for p in params])
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        for a, b in zip(*outs):
            assert torch.allclose(a, b, atol=tol, rtol=tol)
