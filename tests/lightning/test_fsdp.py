"""SAM and ASAM under FSDP (2 CPU processes, gloo, Lightning's FSDPStrategy running its sharding code): each rank's
optimizer holds shards, so the perturbation must use one norm over all shards. FSDP synchronises every backward,
so the step equals the unsharded step on the global batch, written out here in float64."""

import functools
import os

import pytest
import torch
from torch.func import functional_call

from aipflow.optim import ASAM, SAM
from tests.lightning.helpers import CountingModule, loader, regression_data, trainer
from tests.lightning.strategies import CPUFSDPStrategy
from tests.lightning.test_ddp import rank_rows

SGD = functools.partial(torch.optim.SGD, lr=0.1)


class FullWeights(CountingModule):
    def __init__(self, factory, out_dir):
        super().__init__(factory)
        self.out_dir = out_dir

    def on_train_end(self):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(self.trainer.strategy.model):
            weights = [p.detach().clone() for p in self.net.parameters()]
        torch.save(weights, os.path.join(self.out_dir, f"w{self.trainer.global_rank}.pt"))


def unsharded_step(factory, adaptive, rho, eta=0.01):
    """One SAM / ASAM step on the rows of both ranks' first batches, in float64 (Foret et al.; Kwon et al. eq. 9)."""
    torch.manual_seed(0)
    reference = CountingModule(factory).double()
    names = [n for n, _ in reference.net.named_parameters()]
    w0 = [p.detach().clone() for p in reference.net.parameters()]
    x, y = (t.double() for t in regression_data(64))
    rows = torch.cat(rank_rows(0))

    def grad(weights):
        params = [w.clone().requires_grad_(True) for w in weights]
        out = functional_call(reference.net, dict(zip(names, params)), (x[rows],))
        return torch.autograd.grad(torch.nn.functional.mse_loss(out, y[rows]), params)

    g = grad(w0)
    t = [w.abs() + eta if adaptive else torch.ones_like(w) for w in w0]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
    descent = grad([w + rho * ti * ti * gi / norm for w, ti, gi in zip(w0, t, g)])
    return [w - 0.1 * d for w, d in zip(w0, descent)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SAM", "ASAM"])
def test_fsdp_sam_equals_the_unsharded_step(name, tmp_path):
    factory = (
        functools.partial(SAM, base_optimizer=SGD, rho=0.05)
        if name == "SAM"
        else functools.partial(ASAM, base_optimizer=SGD, rho=0.5)
    )
    torch.manual_seed(0)
    model = FullWeights(factory, str(tmp_path))
    x, y = regression_data(64)
    strategy = CPUFSDPStrategy(process_group_backend="gloo")
    trainer(strategy=strategy, devices=2, max_steps=1).fit(model, loader(x, y, 8))
    got = torch.load(tmp_path / "w0.pt", weights_only=True)
    want = unsharded_step(factory, adaptive=name == "ASAM", rho=0.05 if name == "SAM" else 0.5)
    assert max((a.double() - b).abs().max().item() for a, b in zip(got, want)) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["BSAM", "IVON"])
def test_bayesian_optimizers_under_fsdp_are_refused_clearly(name, tmp_path):
    from aipflow.optim import BSAM, IVON

    factory = {"BSAM": functools.partial(BSAM, lr=0.05, seed=0), "IVON": functools.partial(IVON, lr=0.05, seed=0)}
    x, y = regression_data(32)
    strategy = CPUFSDPStrategy(process_group_backend="gloo")
    with pytest.raises(Exception, match=f"{name} with CPUFSDPStrategy is not supported yet"):
        trainer(strategy=strategy, devices=2, max_steps=1).fit(CountingModule(factory[name]), loader(x, y, 8))
