import functools
import io

import pytest
import torch
from torch import nn

from aipflow.optim import ASAM, BSAM, IVON, SAM, OptionError
from tests.optim.test_against_reference import Problem
from tests.optim.test_against_reference import storage_mode as storage_mode  # the fixture

SGD = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)


def make(name, params):
    if name == "SAM":
        return SAM(params, SGD, rho=0.05)
    if name == "ASAM":
        return ASAM(params, torch.optim.AdamW)
    if name == "BSAM":
        return BSAM(params, lr=0.1, train_size=64, num_subbatches=2, seed=1)
    return IVON(params, lr=0.05, ess=64, mc_samples=2, seed=1)


@pytest.mark.parametrize("cls", [SAM, ASAM])
def test_restore_is_bit_exact_every_step(cls, storage_mode):
    prob = Problem()
    opt = cls(prob.model.parameters(), SGD, rho=0.5)
    for t in range(20):
        prob.closure(opt, t)()
        before = [p.detach().clone() for p in prob.model.parameters()]
        opt.first_step()
        assert not all(torch.equal(a, b) for a, b in zip(before, prob.model.parameters()))
        opt.restore()
        assert all(torch.equal(a, b) for a, b in zip(before, prob.model.parameters()))
        assert len(opt._backups) == 4  # one buffer per parameter, either path
        opt.step(prob.closure(opt, t))


@pytest.mark.parametrize("name", ["BSAM", "IVON"])
def test_sampled_params_restores_the_mean_exactly(name):
    prob = Problem()
    opt = make(name, prob.model.parameters())
    opt.step(prob.closure(opt, 0, getattr(opt, "num_subbatches", 1)))
    mean = [p.detach().clone() for p in prob.model.parameters()]
    with opt.sampled_params(torch.Generator().manual_seed(0)):
        assert not any(torch.equal(a, b) for a, b in zip(mean, prob.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(mean, prob.model.parameters()))


@pytest.mark.parametrize("name", ["SAM", "ASAM", "BSAM", "IVON"])
def test_resume_is_bit_identical(name):
    def closure_for(prob, opt, t):
        return prob.closure(opt, t, getattr(opt, "num_subbatches", 1))

    straight = Problem()
    opt = make(name, straight.model.parameters())
    for t in range(20):
        opt.step(closure_for(straight, opt, t))

    first = Problem()
    opt1 = make(name, first.model.parameters())
    for t in range(10):
        opt1.step(closure_for(first, opt1, t))
    buf = io.BytesIO()
    torch.save({"model": first.model.state_dict(), "opt": opt1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)  # checkpoints hold only tensors and plain types

    resumed = Problem(init_seed=99)  # different init: everything must come from the checkpoint
    resumed.model.load_state_dict(ckpt["model"])
    opt2 = make(name, resumed.model.parameters())
    opt2.load_state_dict(ckpt["opt"])
    for t in range(10, 20):
        opt2.step(closure_for(resumed, opt2, t))
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_sam_checkpoint_holds_base_state_and_no_backup():
    prob = Problem()
    opt = SAM(prob.model.parameters(), SGD)
    opt.step(prob.closure(opt, 0))
    sd = opt.state_dict()
    # torch's layout, which FSDP's optimizer state dict requires (it failed on a nested one): the base optimizer's
    # state, SAM's step count in the groups, no backup of the weights
    assert set(sd) == {"state", "param_groups"}
    assert all(set(s) == {"momentum_buffer"} for s in sd["state"].values())
    assert all(g["sam_steps"] == 1 and g["rho"] == 0.05 for g in sd["param_groups"])
    again = SAM(prob.model.parameters(), SGD)
    again.load_state_dict(sd)
    assert again.steps == 1 and "sam_steps" not in again.param_groups[0]
    assert again.param_groups is again.base_optimizer.param_groups


def test_sam_loads_the_nested_layout_of_earlier_checkpoints():
    prob = Problem()
    opt = SAM(prob.model.parameters(), SGD)
    opt.step(prob.closure(opt, 0))
    nested = {"base_optimizer": opt.base_optimizer.state_dict(), "sam": {"steps": 1}}
    again = SAM(prob.model.parameters(), SGD)
    again.load_state_dict(nested)
    assert again.steps == 1 and len(again.state) == len(opt.state)


def test_zero_gradient_gives_no_perturbation_and_no_nan():
    w = nn.Parameter(torch.ones(3))
    opt = SAM([w], SGD)
    w.grad = torch.zeros(3)
    opt.first_step()
    assert torch.equal(w.detach(), torch.ones(3))
    opt.second_step()
    assert torch.isfinite(w).all()


def test_interval_takes_plain_steps_in_between():
    prob = Problem()
    calls = []
    opt = SAM(prob.model.parameters(), SGD, interval=3)
    for t in range(6):
        closure = prob.closure(opt, t)

        def counted(closure=closure):
            calls.append(1)
            return closure()

        opt.step(counted)
    assert len(calls) == 2 + 1 + 1 + 2 + 1 + 1


@pytest.mark.parametrize("cls", [SAM, ASAM])
def test_base_options_as_keywords_davda54_call_shape(cls):
    """``SAM(params, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)`` (davda54/sam's shape) is the factory form
    ``SAM(params, partial(SGD, lr=0.1, momentum=0.9), rho=0.05)``: the same base options, the same steps."""
    keywords, factory = Problem(), Problem()
    a = cls(keywords.model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    b = cls(factory.model.parameters(), functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), rho=0.05)
    assert (a.param_groups[0]["lr"], a.param_groups[0]["momentum"]) == (0.1, 0.9)
    for t in range(3):
        a.step(keywords.closure(a, t))
        b.step(factory.closure(b, t))
    for p, q in zip(keywords.model.parameters(), factory.model.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(TypeError, match="momentun"):  # a misspelt base option is the base optimizer's error
        cls(Problem().model.parameters(), torch.optim.SGD, lr=0.1, momentun=0.9)


def test_lr_scheduler_drives_the_base_optimizer():
    prob = Problem()
    opt = SAM(prob.model.parameters(), SGD)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(prob.closure(opt, 0))
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_non_finite_loss_is_a_clear_error_and_weights_stay():
    w = nn.Parameter(torch.ones(2))
    opt = SAM([w], SGD)

    def bad():
        opt.zero_grad()
        loss = (w * float("nan")).sum()
        loss.backward()
        return loss

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        opt.step(bad)
    assert torch.equal(w.detach(), torch.ones(2))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda p: SAM(p, SGD, rho=0.0), "rho must be > 0, got 0.0"),
        (lambda p: SAM(p, SGD, rho=-1), "rho must be > 0"),
        (lambda p: SAM(p, torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1)), "base_optimizer must be"),
        (lambda p: SAM(p, lambda params: "not an optimizer"), "base_optimizer must build a torch.optim.Optimizer"),
        (lambda p: SAM(p, SGD, interval=0), "interval must be an integer >= 1"),
        (lambda p: SAM(p, SGD, impl="cuda"), "impl must be one of"),
        (lambda p: BSAM(p, beta1=1.0, train_size=10), r"beta1 must lie in \[0, 1\), got 1.0"),
        (lambda p: BSAM(p, beta2=-0.1, train_size=10), r"beta2 must lie in \[0, 1\)"),
        (lambda p: BSAM(p, rho=0, train_size=10), "rho must be > 0"),
        (lambda p: IVON(p, beta2=1.5, ess=10), r"beta2 must lie in \[0, 1\)"),
        (lambda p: IVON(p, mc_samples=0, ess=10), "mc_samples must be an integer >= 1"),
        (lambda p: IVON(p, hess_init=0, ess=10), "hess_init must be > 0"),
    ],
)
def test_bad_arguments(build, match):
    """Each refusal is an OptionError carrying the option's name and value: the command names the config field
    from them (``model.init_args.optimizer.init_args.<field>``) without reading the message."""
    with pytest.raises(OptionError, match=match) as raised:
        build([nn.Parameter(torch.ones(2))])
    assert match.startswith(raised.value.field) and str(raised.value).startswith(f"{raised.value.field} must ")


@pytest.mark.parametrize("cls, missing", [(BSAM, "train_size"), (IVON, "ess")])
def test_missing_dataset_size_is_a_clear_error(cls, missing):
    w = nn.Parameter(torch.ones(2))
    opt = cls([w], num_subbatches=1) if cls is BSAM else cls([w])

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    with pytest.raises(ValueError, match=f"needs {missing}"):
        opt.step(closure)


def test_step_without_closure_explains():
    opt = SAM([nn.Parameter(torch.ones(1))], SGD)
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()


def test_triton_request_without_kernels_is_an_error(monkeypatch):
    from aipflow.optim.functional import resolve_impl

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # CPU tensors, no interpreter: the kernels cannot run
    with pytest.raises(RuntimeError, match="impl='triton' was asked for.*TRITON_INTERPRET=1"):
        resolve_impl("triton", [torch.ones(1)])
    assert resolve_impl("auto", [torch.ones(1)]) == "foreach"
    monkeypatch.setattr("aipflow.kernels.available", lambda: False)
    with pytest.raises(RuntimeError, match="impl='triton' was asked for"):
        SAM([nn.Parameter(torch.ones(1))], SGD, impl="triton").step(lambda: torch.ones(()))


@pytest.mark.parametrize("name", ["SAM", "BSAM", "IVON"])
def test_mixed_dtypes_and_param_groups_keep_fp32_state_through_resume(name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    model[2].to(torch.bfloat16)
    groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}]
    x, y = torch.randn(8, 4), torch.randn(8, 2)

    def build():
        return make(name, groups if name != "SAM" else [dict(g) for g in groups])

    opt = build()

    def closure(k=None):
        opt.zero_grad()
        xs, ys = (x, y) if k is None else (x[4 * k : 4 * k + 4], y[4 * k : 4 * k + 4])
        loss = nn.functional.mse_loss(model[2](model[1](model[0](xs)).bfloat16()).float(), ys)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    assert model[2].weight.dtype == torch.bfloat16 and all(torch.isfinite(p).all() for p in model.parameters())
    if name != "SAM":
        state = opt.state[model[2].weight]
        assert all(t.dtype == torch.float32 for k, t in state.items() if k != "step")
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        buf.seek(0)
        opt.load_state_dict(torch.load(buf, weights_only=True))
        assert all(t.dtype == torch.float32 for k, t in opt.state[model[2].weight].items() if k != "step")
        assert opt.param_groups[1]["lr"] == 0.01
