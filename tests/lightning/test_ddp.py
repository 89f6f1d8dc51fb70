"""Two CPU processes (gloo, ddp_fork): weights identical across ranks and the number of all-reduces per step."""

import functools
import json
import os

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from aipflow.lightning import SharpnessAwareTraining
from aipflow.optim import BSAM, IVON, SAM, SGLD
from tests.lightning.helpers import CountingModule, loader, regression_data, trainer

COUNTS = {"ddp_buckets": 0, "explicit": 0, "explicit_in_steps": 0}
REAL_ALL_REDUCE = torch.distributed.all_reduce


def counting_comm_hook(state, bucket):
    """DDP's averaging all-reduce, counted (Lightning registers comm hooks only on CUDA, so the test does)."""
    COUNTS["ddp_buckets"] += 1
    tensor = bucket.buffer().div_(torch.distributed.get_world_size())
    return REAL_ALL_REDUCE(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])


class Recorder(CountingModule):
    def __init__(self, factory, out_dir):
        super().__init__(factory)
        self.out_dir = out_dir

    def on_train_batch_start(self, batch, batch_idx):
        self._explicit_before = COUNTS["explicit"]

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # Lightning itself all-reduces a few flags per fit; count only what happens inside training steps
        COUNTS["explicit_in_steps"] += COUNTS["explicit"] - self._explicit_before

    def on_train_start(self):
        self.trainer.strategy.model.register_comm_hook(None, counting_comm_hook)

    def on_train_end(self):
        rank = self.trainer.global_rank
        torch.save([p.detach().clone() for p in self.parameters()], os.path.join(self.out_dir, f"w{rank}.pt"))
        with open(os.path.join(self.out_dir, f"c{rank}.json"), "w") as fh:
            json.dump({**COUNTS, "steps": self.trainer.global_step}, fh)


FACTORIES = {
    "SAM": functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)),
    "BSAM": functools.partial(BSAM, lr=0.05, num_subbatches=2, seed=0),
    "IVON": functools.partial(IVON, lr=0.05, seed=0),
    # the Langevin noise is added to the weights: the same draw on every rank, or the replicas drift apart
    "SGLD": functools.partial(SGLD, lr=0.05, seed=0, thinning=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SAM", "SAM+sync_first_pass", "BSAM", "IVON", "SGLD"])
def test_ddp_two_processes(name, tmp_path, monkeypatch):
    real_all_reduce = torch.distributed.all_reduce

    def counting_all_reduce(*args, **kwargs):
        COUNTS["explicit"] += 1
        return real_all_reduce(*args, **kwargs)

    monkeypatch.setattr(torch.distributed, "all_reduce", counting_all_reduce)
    x, y = regression_data(64)
    model = Recorder(FACTORIES[name.split("+")[0]], str(tmp_path))
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    callbacks = [SharpnessAwareTraining(sync_first_pass="sync_first_pass" in name)]
    trainer(callbacks, strategy=strategy, devices=2, max_epochs=1).fit(model, loader(x, y, 8))
    w0, w1 = (torch.load(tmp_path / f"w{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(w0, w1))
    counts = [json.loads((tmp_path / f"c{r}.json").read_text()) for r in (0, 1)]
    steps = counts[0]["steps"]
    assert steps == 4  # 64 samples / 2 ranks / batch 8
    for c in counts:
        if name == "SAM":
            assert c["ddp_buckets"] == steps and c["explicit_in_steps"] == 0  # one all-reduce per step: the second pass
        elif name == "SAM+sync_first_pass":
            assert c["ddp_buckets"] == 2 * steps  # the perturbation then uses the global gradient
        else:
            assert c["ddp_buckets"] == 0 and c["explicit_in_steps"] == steps  # one flat all-reduce of (g, h) per step


class Saver(CountingModule):
    def __init__(self, factory, out_dir):
        super().__init__(factory)
        self.out_dir = out_dir

    def on_train_end(self):
        rank = self.trainer.global_rank
        torch.save([p.detach().clone() for p in self.parameters()], os.path.join(self.out_dir, f"e{rank}.pt"))


def ddp_weights(factory, tmp_path, steps=1):
    torch.manual_seed(0)
    model = Saver(factory, str(tmp_path))
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    x, y = regression_data(64)
    trainer(strategy=strategy, devices=2, max_steps=steps).fit(model, loader(x, y, 8))
    return torch.load(tmp_path / "e0.pt", weights_only=True)


def rank_rows(step, batch=8, n=64, world=2):
    """The rows each rank trains on at ``step`` of epoch 0: Lightning's DistributedSampler shuffles the training
    set with seed 0 (checked against the rows the ranks received)."""
    from torch.utils.data import DistributedSampler, TensorDataset

    rows = []
    for rank in range(world):
        sampler = DistributedSampler(TensorDataset(torch.zeros(n)), num_replicas=world, rank=rank, seed=0)
        sampler.set_epoch(0)
        rows.append(torch.tensor(list(sampler)[step * batch : (step + 1) * batch]))
    return rows


@pytest.mark.slow
def test_ddp_sgd_equals_one_process_with_the_global_batch(tmp_path):
    # 2 processes x batch 8 against 1 process x batch 16 over the same rows (DDP averages the two batch means)
    from torch.utils.data import DataLoader, TensorDataset

    sgd = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    two = ddp_weights(sgd, tmp_path, steps=2)
    torch.manual_seed(0)
    single = CountingModule(sgd)
    x, y = regression_data(64)
    batches = [torch.cat(rank_rows(step)).tolist() for step in range(2)]
    trainer(max_steps=2).fit(single, DataLoader(TensorDataset(x, y), batch_sampler=batches))
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(two, single.parameters()))


@pytest.mark.slow
def test_ddp_sam_is_m_sharpness_with_one_perturbation_per_rank(tmp_path):
    # documented behaviour: each rank perturbs with its own gradient (no all-reduce in the first pass), the gradients
    # at the ranks' perturbed points are averaged by DDP's all-reduce: written out here in float64
    from torch.func import functional_call

    sam = functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.1), rho=0.05)
    got = ddp_weights(sam, tmp_path)
    torch.manual_seed(0)
    reference = CountingModule(sam).double()
    names = [n for n, _ in reference.net.named_parameters()]
    w0 = [p.detach().clone() for p in reference.net.parameters()]
    x, y = (t.double() for t in regression_data(64))

    def grad(weights, rows):
        params = [w.clone().requires_grad_(True) for w in weights]
        out = functional_call(reference.net, dict(zip(names, params)), (x[rows],))
        return torch.autograd.grad(torch.nn.functional.mse_loss(out, y[rows]), params)

    descent = []
    for rows in rank_rows(0):  # each rank's first batch
        g = grad(w0, rows)
        norm = torch.sqrt(sum((gi**2).sum() for gi in g))
        descent.append(grad([w + 0.05 * gi / norm for w, gi in zip(w0, g)], rows))
    want = [w - 0.1 * (a + b) / 2 for w, a, b in zip(w0, *descent)]
    assert all(torch.allclose(a.double(), b, atol=1e-6, rtol=0) for a, b in zip(got, want))
    # and not the global-gradient perturbation (sync_first_pass), which a single process with batch 16 would take
    rows = torch.cat(rank_rows(0))
    g = grad(w0, rows)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    global_descent = grad([w + 0.05 * gi / norm for w, gi in zip(w0, g)], rows)
    other = [w - 0.1 * d for w, d in zip(w0, global_descent)]
    assert max((a.double() - b).abs().max().item() for a, b in zip(got, other)) > 1e-5


class PoisonedOnRankOne(Saver):
    """Rank 1's first pass has an inf loss (fp16 overflow there only); rank 0's is clean."""

    def training_step(self, batch, batch_idx):
        self.inject_inf_on_call = {0} if self.global_rank == 1 else None
        return super().training_step(batch, batch_idx)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SAM", "IVON"])
def test_ddp_fp16_overflow_on_one_rank_skips_the_step_on_every_rank(name, tmp_path):
    # the first pass is local under DDP (no gradient all-reduce), so only rank 1 sees the inf: the skip decision
    # must be agreed, or rank 0 steps while rank 1 restores and the replicas part for good
    from tests.lightning.test_sharpness import fp16_on_cpu

    torch.manual_seed(0)
    model = PoisonedOnRankOne(FACTORIES[name], str(tmp_path))
    start = [p.detach().clone() for p in model.parameters()]
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    x, y = regression_data(64)
    trainer(strategy=strategy, devices=2, max_steps=1, plugins=[fp16_on_cpu()]).fit(model, loader(x, y, 8))
    for rank in (0, 1):
        weights = torch.load(tmp_path / f"e{rank}.pt", weights_only=True)
        assert all(torch.equal(a, b) for a, b in zip(start, weights)), f"rank {rank} moved"
