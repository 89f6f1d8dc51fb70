"""SAM, ASAM, bSAM and IVON under FSDP (2 CPU processes, gloo, Lightning's FSDPStrategy running its sharding code):
each rank's optimizer holds shards, so SAM's perturbation must use one norm over all shards, and bSAM / IVON keep
their state per shard, each rank drawing the noise of its own shard. FSDP synchronises every backward, so a step
equals the unsharded step on the global batch at the one sample the ranks assembled, written out here in float64
(tests/optim/reference.py)."""

import functools
import os

import pytest
import torch
from torch.func import functional_call

from aipflow.optim import ASAM, SAM
from aipflow.optim.functional import triton_available as can_use_triton
from aipflow.testing import CPUFSDPStrategy
from tests.lightning.helpers import CountingModule, loader, regression_data, trainer
from tests.lightning.test_ddp import rank_rows
from tests.optim import reference

SGD = functools.partial(torch.optim.SGD, lr=0.1)
# the Triton kernels take the shards as they are: 1-D contiguous views of FSDP's flat parameter, some empty
# (use_orig_params: a rank may hold no part of a parameter); on CPU through Triton's interpreter
IMPLS = ["foreach", pytest.param("triton", marks=pytest.mark.skipif(not can_use_triton(), reason="no Triton"))]


class FullWeights(CountingModule):
    def __init__(self, factory, out_dir):
        super().__init__(factory)
        self.out_dir = out_dir

    def weights(self):
        # attributes, not parameters(): with use_orig_params=False FSDP holds them as views of its flat parameter
        return [getattr(self.net[i], name) for i in (0, 2) for name in ("weight", "bias")]

    def on_train_end(self):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(self.trainer.strategy.model):
            weights = [w.detach().clone() for w in self.weights()]
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
@pytest.mark.parametrize("impl", IMPLS)
def test_fsdp_sam_equals_the_unsharded_step(name, impl, tmp_path):
    factory = (
        functools.partial(SAM, base_optimizer=SGD, rho=0.05, impl=impl)
        if name == "SAM"
        else functools.partial(ASAM, base_optimizer=SGD, rho=0.5, impl=impl)
    )
    torch.manual_seed(0)
    model = FullWeights(factory, str(tmp_path))
    x, y = regression_data(64)
    strategy = CPUFSDPStrategy(process_group_backend="gloo")
    trainer(strategy=strategy, devices=2, max_steps=1).fit(model, loader(x, y, 8))
    got = torch.load(tmp_path / "w0.pt", weights_only=True)
    want = unsharded_step(factory, adaptive=name == "ASAM", rho=0.05 if name == "SAM" else 0.5)
    assert max((a.double() - b).abs().max().item() for a, b in zip(got, want)) <= 1e-6


class Recorder(FullWeights):
    """Saves, per rank, the full weights every training_step ran at (FSDP has gathered them by then), and at the
    end the full weights and the rank's own optimizer state (its shards)."""

    def __init__(self, factory, out_dir):
        super().__init__(factory, out_dir)
        self.points = []

    def training_step(self, batch, batch_idx):
        self.points.append([w.detach().clone() for w in self.weights()])
        return super().training_step(batch, batch_idx)

    def on_train_end(self):
        super().on_train_end()
        rank = self.trainer.global_rank
        optimizer = self.trainer.optimizers[0]
        state = [optimizer.state[p] for group in optimizer.param_groups for p in group["params"]]
        torch.save({"points": self.points, "state": state}, os.path.join(self.out_dir, f"r{rank}.pt"))


def fsdp_run(factory, tmp_path, **fsdp_options):
    torch.manual_seed(0)
    model = Recorder(factory, str(tmp_path))
    x, y = regression_data(64)
    strategy = CPUFSDPStrategy(process_group_backend="gloo", **fsdp_options)
    trainer(strategy=strategy, devices=2, max_steps=1).fit(model, loader(x, y, 8))
    runs = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in range(2)]
    return runs, torch.load(tmp_path / "w0.pt", weights_only=True)


def float64_problem():
    """The initial weights and the gradient of the global batch's loss (sub-batch k: every rank's k-th half)."""
    torch.manual_seed(0)
    reference = CountingModule(SGD).double()
    names = [n for n, _ in reference.net.named_parameters()]
    w0 = [p.detach().clone() for p in reference.net.parameters()]
    x, y = (t.double() for t in regression_data(64))
    per_rank = rank_rows(0)

    def grad(weights, k):
        rows = torch.cat([r if k is None else r.tensor_split(2)[k] for r in per_rank])
        params = [w.clone().requires_grad_(True) for w in weights]
        out = functional_call(reference.net, dict(zip(names, params)), (x[rows],))
        return list(torch.autograd.grad(torch.nn.functional.mse_loss(out, y[rows]), params))

    return w0, grad


def gathered_state(runs, key, like):
    """A state from the ranks' shards, as full parameters: rank 0's shards then rank 1's are the flattened
    parameters in order (flat parameters or original ones alike), then padding."""
    flat = torch.cat([state[key].reshape(-1) for run in runs for state in run["state"]]).double()
    return list(torch.split(flat[: sum(w.numel() for w in like)], [w.numel() for w in like]))


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
def test_fsdp_ivon_equals_the_unsharded_step_at_the_assembled_sample(impl, tmp_path):
    from aipflow.optim import IVON

    ess, lr, h0, wd = 64.0, 0.05, 1.0, 1e-4
    # flat parameters (use_orig_params=False; bSAM's test runs Lightning's default, True): both ranks' optimizers
    # hold one shard of 37 numbers, and draw its noise with one shape
    runs, got = fsdp_run(functools.partial(IVON, lr=lr, ess=ess, seed=0, impl=impl), tmp_path, use_orig_params=False)
    (theta,) = runs[0]["points"]
    # one sample of the whole model: each rank drew its own shard's noise, every rank ran at the same point
    assert all(torch.equal(a, b) for a, b in zip(theta, runs[1]["points"][0]))
    w0, grad = float64_problem()
    sigma0 = (ess * (h0 + wd)) ** -0.5
    eps = [(t.double() - w) / sigma0 for t, w in zip(theta, w0)]
    flat = torch.cat([e.reshape(-1) for e in eps])
    half = flat.numel() // 2  # the shards' noise is not the same stream twice, and looks standard normal
    assert (flat[:half] - flat[half:]).abs().min() > 1e-4 and abs(flat.std().item() - 1) < 0.15
    noise = iter([eps])
    want = [w.clone() for w in w0]
    state = {"g": [torch.zeros_like(w) for w in w0], "h": [torch.full_like(w, h0) for w in w0], "t": 0}
    reference.ivon_step(want, state, grad, lambda: next(noise), ess, lr, h0, 0.9, 0.99999, wd, samples=1)
    assert max((a.double() - b).abs().max().item() for a, b in zip(got, want)) <= 1e-6
    hess = gathered_state(runs, "hess", w0)
    assert max(((a - b.reshape(-1)).abs() / b.abs().reshape(-1)).max().item() for a, b in zip(hess, state["h"])) <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("impl", IMPLS)
def test_fsdp_bsam_equals_the_unsharded_step_at_the_assembled_samples(impl, tmp_path):
    from aipflow.optim import BSAM

    n, s0, rho, lr = 64 * 4.0, 1.0, 0.01, 0.05
    runs, got = fsdp_run(functools.partial(BSAM, lr=lr, train_size=64, num_subbatches=2, seed=0, impl=impl), tmp_path)
    points = runs[0]["points"]  # noisy point, perturbed point, per sub-batch
    assert len(points) == 4 and all(
        torch.equal(a, b) for pa, pb in zip(points, runs[1]["points"]) for a, b in zip(pa, pb)
    )
    w0, grad = float64_problem()
    noise = iter([[(t.double() - w) * (n * s0) ** 0.5 for t, w in zip(points[k], w0)] for k in (0, 2)])
    want = [w.clone() for w in w0]
    state = {"gbar": [torch.zeros_like(w) for w in w0], "s": [torch.full_like(w, s0) for w in w0]}
    reference.bsam_step(want, state, grad, lambda: next(noise), n, 2, lr, rho, 0.9, 0.999, 40.0, 0.1)
    # the perturbed points the ranks ran at are m + rho g_k / s, g_k the gradient of global sub-batch k
    for k in (0, 1):
        g = grad([t.double() for t in points[2 * k]], k)
        perturbed = [w + rho * gi / s0 for w, gi in zip(w0, g)]
        assert all(torch.allclose(p.double(), q, atol=1e-6) for p, q in zip(points[2 * k + 1], perturbed))
    assert max((a.double() - b).abs().max().item() for a, b in zip(got, want)) <= 1e-6
    precision = gathered_state(runs, "precision", w0)
    assert max((a - b.reshape(-1)).abs().max().item() for a, b in zip(precision, state["s"])) <= 1e-6


def resumable_fit(kind, optimizer, tmp_path, name, epochs, ckpt_path=None):
    """Fit on 2 CPU processes (32 rows: 2 steps per epoch per rank), a checkpoint every epoch; the full weights."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy

    from aipflow.lightning import RNGStateCheckpoint, SharpnessAwareTraining

    out = tmp_path / name
    out.mkdir()
    torch.manual_seed(0)
    model = FullWeights(optimizer, str(out))
    if kind == "ddp":
        strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
        model.on_train_end = lambda: torch.save(
            [p.detach().clone() for p in model.net.parameters()], out / f"w{model.trainer.global_rank}.pt"
        )
    else:
        strategy = CPUFSDPStrategy(process_group_backend="gloo", state_dict_type=kind.removeprefix("fsdp-"))
    checkpoints = ModelCheckpoint(dirpath=out, filename="epoch{epoch}", save_top_k=-1, auto_insert_metric_name=False)
    x, y = regression_data(32)
    callbacks = [SharpnessAwareTraining(), RNGStateCheckpoint(), checkpoints]
    trainer(callbacks, strategy=strategy, devices=2, max_epochs=epochs, enable_checkpointing=True).fit(
        model, loader(x, y, 8), ckpt_path=ckpt_path
    )
    return torch.load(out / "w0.pt", weights_only=True), out


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, name",
    [
        ("fsdp-full", "IVON"),
        ("fsdp-sharded", "IVON"),
        ("fsdp-sharded", "BSAM"),
        ("ddp", "IVON"),
        ("fsdp-full", "SAM"),
        ("fsdp-sharded", "SAM"),
    ],
)
def test_resume_on_two_ranks_is_bit_identical(kind, name, tmp_path):
    # every rank draws its own noise: the resumed run must draw what each rank would have drawn, not rank 0's;
    # FSDP reshards the optimizer state, which must be in torch's layout (SAM's nested one failed to save)
    from aipflow.optim import BSAM, IVON

    optimizer = {
        "IVON": functools.partial(IVON, lr=0.05, ess=64.0, seed=0),
        "BSAM": functools.partial(BSAM, lr=0.05, train_size=64, num_subbatches=2, seed=0),
        "SAM": functools.partial(SAM, base_optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)),
    }[name]
    straight, _ = resumable_fit(kind, optimizer, tmp_path, "straight", epochs=3)
    _, first = resumable_fit(kind, optimizer, tmp_path, "first", epochs=1)
    resumed, _ = resumable_fit(kind, optimizer, tmp_path, "resumed", epochs=3, ckpt_path=first / "epoch0.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


class FullyShardedInConfigureModel(FullWeights):
    """FSDP2: fully_shard in configure_model (ModelParallelStrategy); the parameters become DTensors."""

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        fully_shard(self.net, mesh=self.device_mesh["data_parallel"])

    def on_train_end(self):
        weights = [p.full_tensor().detach().clone() for p in self.net.parameters()]
        torch.save(weights, os.path.join(self.out_dir, f"w{self.trainer.global_rank}.pt"))


def fsdp2_fit(factory, tmp_path):
    from aipflow.testing import ForkedModelParallelStrategy

    torch.manual_seed(0)
    x, y = regression_data(64)
    strategy = ForkedModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
    trainer(strategy=strategy, devices=2, max_steps=1).fit(
        FullyShardedInConfigureModel(factory, str(tmp_path)), loader(x, y, 8)
    )
    return torch.load(tmp_path / "w0.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SAM", "ASAM"])
def test_fsdp2_sam_equals_the_unsharded_step(name, tmp_path):
    # each rank perturbs its own part of the DTensor parameters in place, with the norm summed over the parts
    rho = 0.05 if name == "SAM" else 0.5
    factory = functools.partial(SAM if name == "SAM" else ASAM, base_optimizer=SGD, rho=rho)
    got = fsdp2_fit(factory, tmp_path)
    want = unsharded_step(factory, adaptive=name == "ASAM", rho=rho)
    assert max((a.double() - b).abs().max().item() for a, b in zip(got, want)) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("name", ["BSAM", "IVON"])
def test_fsdp2_bayesian_optimizers_are_refused_clearly(name, tmp_path):
    from aipflow.optim import BSAM, IVON

    factory = functools.partial(IVON, ess=64.0) if name == "IVON" else functools.partial(BSAM, train_size=64)
    with pytest.raises(Exception, match=f"{name} with ForkedModelParallelStrategy and DTensor parameters"):
        fsdp2_fit(factory, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, precision", [("SAM", "bf16-mixed"), ("IVON", "bf16-mixed"), ("BSAM", "bf16-mixed"), ("SAM", "16-mixed")]
)
def test_fsdp_trains_in_mixed_precision(name, precision, tmp_path):
    # FSDP computes in half precision from fp32 shards, which the optimizers update; "16-mixed" on CPU brings FSDP's
    # ShardedGradScaler made for CUDA, disabled (the integration read its per-optimizer state and failed)
    from aipflow.optim import BSAM, IVON

    factory = {
        "SAM": functools.partial(SAM, base_optimizer=SGD),
        "IVON": functools.partial(IVON, ess=64.0, lr=0.05),
        "BSAM": functools.partial(BSAM, train_size=64, lr=0.05, num_subbatches=2),
    }[name]
    torch.manual_seed(0)
    model = FullWeights(factory, str(tmp_path))
    start = [p.detach().clone() for p in model.parameters()]
    x, y = regression_data(64)
    strategy = CPUFSDPStrategy(process_group_backend="gloo")
    trainer(strategy=strategy, devices=2, max_epochs=2, precision=precision).fit(model, loader(x, y, 8))
    got = torch.load(tmp_path / "w0.pt", weights_only=True)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in got)
    assert max((a - b).abs().max().item() for a, b in zip(got, start)) > 1e-3
