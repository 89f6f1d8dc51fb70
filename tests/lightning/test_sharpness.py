import functools

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from aipflow.lightning import SharpnessAwareTraining
from aipflow.optim import BSAM, IVON, SAM
from tests.lightning.helpers import CountingModule, loader, regression_data, trainer

SGD = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)


def sam_factory(**kw):
    return functools.partial(SAM, base_optimizer=SGD, rho=0.05, **kw)


FACTORIES = {
    "SAM": sam_factory(),
    "BSAM": functools.partial(BSAM, lr=0.05, num_subbatches=2, seed=0),
    "IVON": functools.partial(IVON, lr=0.05, mc_samples=2, seed=0),
}
PASSES = {"SAM": 2, "BSAM": 4, "IVON": 2}


@pytest.mark.parametrize("name", ["SAM", "BSAM", "IVON"])
def test_hooks_clip_log_and_bn_fire_once_per_step(name):
    x, y = regression_data(64)
    model = CountingModule(FACTORIES[name], batch_norm=True)
    steps = 4
    trainer(gradient_clip_val=0.5, max_steps=steps).fit(model, loader(x, y, 16))
    assert model.counts["training_step"] == PASSES[name] * steps  # every pass really ran
    assert model.counts["before_optimizer_step"] == steps
    assert model.counts["clip"] == steps
    assert model.counts["log"] == steps
    bn = model.net[1]
    assert bn.num_batches_tracked.item() == steps


def test_bn_statistics_come_from_the_chosen_pass():
    x, y = regression_data(16)
    results = {}
    for mode in ("first", "second", "both"):
        torch.manual_seed(0)
        model = CountingModule(sam_factory(), batch_norm=True)
        trainer([SharpnessAwareTraining(bn_update=mode)], max_steps=1).fit(model, loader(x, y, 16))
        results[mode] = (model.net[1].running_mean.clone(), model.net[1].num_batches_tracked.item())
    torch.manual_seed(0)
    fresh = CountingModule(sam_factory(), batch_norm=True)
    with torch.no_grad():
        fresh.net.train()(x)  # one pass at the initial weights = the first SAM pass
    assert torch.allclose(results["first"][0], fresh.net[1].running_mean)
    assert not torch.allclose(results["second"][0], results["first"][0])
    assert results["first"][1] == results["second"][1] == 1 and results["both"][1] == 2


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", ["SAM", "BSAM", "IVON"])
def test_trains_in_precision(name, precision):
    x, y = regression_data(64)
    model = CountingModule(FACTORIES[name])
    start = [p.detach().clone() for p in model.parameters()]
    trainer(precision=precision, max_epochs=2).fit(model, loader(x, y, 16))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(start, model.parameters()))


def fp16_on_cpu():
    # Trainer(precision="16-mixed") on CPU silently becomes bf16; the plugin itself keeps fp16 + a GradScaler,
    # so the scaler logic runs here exactly as on a GPU
    return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))


@pytest.mark.parametrize("poisoned_call", [0, 1], ids=["inf-in-pass-1", "inf-in-pass-2"])
def test_fp16_inf_in_either_pass_skips_the_step_exactly(poisoned_call):
    x, y = regression_data(16)
    model = CountingModule(sam_factory(), inject_inf_on_call={poisoned_call})
    start = [p.detach().clone() for p in model.parameters()]
    t = trainer(plugins=[fp16_on_cpu()], max_steps=1)
    scaler = t.strategy.precision_plugin.scaler
    scale_before = scaler.get_scale()
    t.fit(model, loader(x, y, 16))
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters()))  # restored bit for bit, no step
    assert scaler.get_scale() == scale_before * scaler.get_backoff_factor()  # updated once, backed off
    assert model.trainer.optimizers[0].base_optimizer.state == {} or all(
        "momentum_buffer" not in s for s in model.trainer.optimizers[0].base_optimizer.state.values()
    )


def test_fp16_clean_step_moves_and_keeps_scale():
    x, y = regression_data(16)
    model = CountingModule(sam_factory())
    start = [p.detach().clone() for p in model.parameters()]
    t = trainer(plugins=[fp16_on_cpu()], max_steps=1)
    scale_before = t.strategy.precision_plugin.scaler.get_scale()
    t.fit(model, loader(x, y, 16))
    assert not all(torch.equal(a, b) for a, b in zip(start, model.parameters()))
    assert t.strategy.precision_plugin.scaler.get_scale() == scale_before


def test_accumulation_equals_full_batch_sam():
    x, y = regression_data(32)
    torch.manual_seed(0)
    full = CountingModule(sam_factory())
    torch.manual_seed(0)
    accumulated = CountingModule(sam_factory())
    trainer(max_epochs=3).fit(full, loader(x, y, 16))
    trainer(max_epochs=3, accumulate_grad_batches=4).fit(accumulated, loader(x, y, 4))
    for a, b in zip(full.parameters(), accumulated.parameters()):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_accumulated_step_replays_every_micro_batch_not_only_the_last():
    # one SAM step over 4 micro-batches, written out: e from the accumulated gradient, the descent gradient
    # summed over all 4 micro-batches at w + e. Lightning alone re-evaluates only the last micro-batch there.
    from torch.func import functional_call

    x, y = regression_data(16)
    torch.manual_seed(0)
    model = CountingModule(sam_factory())
    names = [n for n, _ in model.net.named_parameters()]
    w0 = [p.detach().clone() for p in model.parameters()]

    def grad(weights, rows):
        params = [w.clone().requires_grad_(True) for w in weights]
        out = functional_call(model.net, dict(zip(names, params)), (x[rows],))
        return torch.autograd.grad(torch.nn.functional.mse_loss(out, y[rows]) / 4, params)

    micro = [slice(4 * j, 4 * j + 4) for j in range(4)]
    g = [sum(parts) for parts in zip(*(grad(w0, rows) for rows in micro))]
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    perturbed = [w + 0.05 * gi / norm for w, gi in zip(w0, g)]
    every = [sum(parts) for parts in zip(*(grad(perturbed, rows) for rows in micro))]
    last_only = grad(perturbed, micro[-1])
    want = [w - 0.05 * d for w, d in zip(w0, every)]  # SGD, first step: the momentum buffer is the gradient
    naive = [w - 0.05 * d for w, d in zip(w0, last_only)]

    trainer(max_steps=1, accumulate_grad_batches=4).fit(model, loader(x, y, 4))
    got = [p.detach() for p in model.parameters()]
    assert all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(got, want))
    assert max((a - b).abs().max().item() for a, b in zip(got, naive)) > 1e-3


def test_bsam_and_ivon_read_the_training_set_size():
    x, y = regression_data(48)
    for name in ("BSAM", "IVON"):
        model = CountingModule(FACTORIES[name])
        trainer(max_steps=1).fit(model, loader(x, y, 16))
        assert model.trainer.optimizers[0].train_size == 48


def test_bsam_rejects_accumulation_clearly():
    x, y = regression_data(32)
    model = CountingModule(FACTORIES["BSAM"])
    with pytest.raises(ValueError, match="accumulate_grad_batches=2 is not supported"):
        trainer(max_steps=1, accumulate_grad_batches=2).fit(model, loader(x, y, 16))


def test_plain_optimizers_pass_through():
    x, y = regression_data(32)
    model = CountingModule(SGD)
    trainer(max_steps=2, gradient_clip_val=1.0).fit(model, loader(x, y, 16))
    assert model.counts == {"before_optimizer_step": 2, "clip": 2, "log": 2, "training_step": 2}


def test_bad_callback_arguments():
    with pytest.raises(ValueError, match="bn_update must be one of"):
        SharpnessAwareTraining(bn_update="third")


def test_per_micro_batch_accumulation_matches_hand_computation():
    x, y = regression_data(16)
    torch.manual_seed(0)
    model = CountingModule(sam_factory())
    torch.manual_seed(0)
    by_hand = CountingModule(sam_factory())
    trainer([SharpnessAwareTraining(accumulation="per_micro_batch")], max_steps=1, accumulate_grad_batches=2).fit(
        model, loader(x, y, 8)
    )
    # the same step written out: e_j from micro-batch j's own gradient, descent gradient summed over j
    opt = SAM(by_hand.parameters(), SGD, rho=0.05)
    total = [torch.zeros_like(p) for p in by_hand.parameters()]
    for xs, ys in ((x[:8], y[:8]), (x[8:], y[8:])):
        opt.zero_grad()
        (torch.nn.functional.mse_loss(by_hand.net(xs), ys) / 2).backward()
        opt.first_step(zero_grad=True)
        (torch.nn.functional.mse_loss(by_hand.net(xs), ys) / 2).backward()
        opt.restore()
        for t, p in zip(total, by_hand.parameters()):
            t += p.grad
    for p, t in zip(by_hand.parameters(), total):
        p.grad = t
    opt.base_optimizer.step()
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    full = CountingModule(sam_factory())
    trainer(max_steps=1, accumulate_grad_batches=2).fit(full, loader(x, y, 8))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(full.parameters(), model.parameters()))


@pytest.mark.parametrize("name", ["SAM", "IVON"])
def test_joins_a_plain_lightning_module_without_configuration(name):
    # no callbacks given: the lightning.pytorch.callbacks_factory entry point adds the integration to every Trainer

    from aipflow.lightning.multi_pass import _SharpnessAwarePrecision

    x, y = regression_data(64)
    model = CountingModule(FACTORIES[name])
    t = trainer(configure_integration=False, max_steps=3)
    t.fit(model, loader(x, y, 16))
    assert isinstance(t.precision_plugin, _SharpnessAwarePrecision)
    assert model.counts["training_step"] == PASSES[name] * 3
    assert model.counts["before_optimizer_step"] == 3 and model.counts["log"] == 3


def test_a_configured_integration_takes_over_from_the_automatic_one():
    from aipflow.lightning import AutomaticSharpnessAwareTraining

    x, y = regression_data(32)
    configured = SharpnessAwareTraining(bn_update="both")
    t = trainer([configured], max_steps=1)
    automatic = [cb for cb in t.callbacks if isinstance(cb, AutomaticSharpnessAwareTraining)]
    assert automatic  # the entry point is installed
    t.fit(CountingModule(FACTORIES["SAM"], batch_norm=True), loader(x, y, 16))
    assert not automatic[0].active and t.precision_plugin._aipflow_options is configured


def test_without_the_integration_a_multi_pass_optimizer_says_what_is_missing(monkeypatch):

    monkeypatch.setattr(
        "lightning.pytorch.trainer.connectors.callback_connector._load_external_callbacks", lambda group: []
    )
    x, y = regression_data(32)
    t = trainer(configure_integration=False, max_steps=1)
    with pytest.raises(RuntimeError, match="needs aipflow's SharpnessAwareTraining callback"):
        t.fit(CountingModule(FACTORIES["SAM"]), loader(x, y, 16))


def test_the_trainer_entry_point_imports_nothing_when_loaded():
    # Lightning loads it at every Trainer construction without catching errors: its module must stay trivial
    import subprocess
    import sys

    code = (
        "import sys; from importlib.metadata import entry_points; "
        "[ep] = [e for e in entry_points(group='lightning.pytorch.callbacks_factory') if e.name == 'aipflow']; "
        "ep.load(); print(sorted(m for m in sys.modules if m.startswith(('aipflow', 'torch', 'lightning'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "['aipflow', 'aipflow._entry']"
