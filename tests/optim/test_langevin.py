"""SGLD and pSGLD against their papers: each step equals a float64 re-derivation in Welling & Teh's / Li et al.'s
notation with the same noise (two parameter groups, bf16 parameters, both impls); on a Gaussian target the
chain's stationary mean and variance are the exact ones of the discretised dynamics (and within 2 % of the
posterior's) within Monte-Carlo error; the sample collector keeps what burn-in, thinning and the cap say, and
``sampled_params`` restores the chain exactly; resuming from a state dict continues the same chain; bad settings
are one line."""

from __future__ import annotations

import math

import pytest
import torch

from aipflow.optim import PSGLD, SGLD, PolynomialDecayLR

from . import reference as ref

N = 50.0


def quadratic_problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    target_a = torch.randn(4, 3, generator=g, dtype=torch.float64)

    def loss_fn(w, v):
        return ((w - target_a) ** 2).sum() * 0.5 + ((v - 1.0) ** 2 * torch.arange(1, 4)).sum() * 0.25

    return [a.to(dtype), b.to(dtype)], loss_fn


def grads_of(loss_fn, params):
    params = [p.detach().clone().requires_grad_(True) for p in params]
    loss_fn(*params).backward()
    return [p.grad for p in params]


def noise_draws(seed, shapes, steps):
    """The optimizer's stream: one CPU generator seeded ``seed``, float32 normals per parameter in order."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, dtype=torch.float32, generator=generator).double() for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize("impl", ["foreach", "reference"])
@pytest.mark.parametrize("name", ["SGLD", "PSGLD"])
def test_steps_equal_the_papers_update_in_float64_with_the_same_noise(name, impl):
    start, loss_fn = quadratic_problem()
    params = [torch.nn.Parameter(p.clone()) for p in start]
    groups = [
        {"params": [params[0]], "lr": 0.02, "weight_decay": 0.1},
        {"params": [params[1]], "lr": 0.005, "weight_decay": 0.0},
    ]
    temperature = 0.7
    extra = {"alpha": 0.9, "eps": 1e-3} if name == "PSGLD" else {}
    opt = (PSGLD if name == "PSGLD" else SGLD)(
        groups, temperature=temperature, train_size=N, seed=11, impl=impl, **extra
    )
    expected = [p.clone() for p in start]
    square_avgs = [torch.zeros_like(p) for p in start]
    noises = noise_draws(11, [p.shape for p in start], 6)
    for step in range(6):

        def closure():
            opt.zero_grad()
            loss = loss_fn(*params)
            loss.backward()
            return loss

        opt.step(closure)
        grads = grads_of(loss_fn, expected)
        for i, (lr, wd) in enumerate(((0.02, 0.1), (0.005, 0.0))):  # the two groups, one parameter each
            one = [expected[i]]
            if name == "SGLD":
                ref.sgld_step(one, [grads[i]], [noises[step][i]], lr, wd, temperature, N)
            else:
                avg = [square_avgs[i]]
                ref.psgld_step(one, [grads[i]], avg, [noises[step][i]], lr, wd, temperature, N, 0.9, 1e-3)
                square_avgs[i] = avg[0]
            expected[i] = one[0]
    for got, want in zip(params, expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)


def test_bf16_parameters_step_in_float32_and_round_once():
    start, loss_fn = quadratic_problem()
    param = torch.nn.Parameter(start[0].to(torch.bfloat16))
    opt = SGLD([param], lr=0.05, train_size=N, seed=3, weight_decay=0.01)

    def closure():
        opt.zero_grad()
        loss = loss_fn(param.double(), start[1])
        loss.backward()
        return loss

    expected = [start[0].to(torch.bfloat16).double()]
    grad = grads_of(lambda w: loss_fn(w, start[1]), [param.detach().double()])[0].to(torch.bfloat16).double()
    ref.sgld_step(expected, [grad], noise_draws(3, [param.shape], 1)[0], 0.05, 0.01, 1.0, N)
    opt.step(closure)
    assert param.dtype == torch.bfloat16
    torch.testing.assert_close(param.detach(), expected[0].to(torch.bfloat16), rtol=0, atol=0)


def gaussian_chains(opt_cls, chains, curvature, mu, steps, lr, beta_n, **kwargs):
    """Independent 1-D chains on L(theta) = sum_c a/2 (theta_c - mu)^2 (each chain's gradient its own)."""
    theta = torch.nn.Parameter(torch.zeros(chains, len(curvature), dtype=torch.float64))
    a = torch.tensor(curvature, dtype=torch.float64)
    opt = opt_cls([theta], lr=lr, train_size=beta_n, seed=0, max_samples=0, **kwargs)
    for _ in range(steps):

        def closure():
            opt.zero_grad()
            loss = (0.5 * a * (theta - mu) ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    return theta.detach(), a


def test_sgld_samples_the_gaussian_posterior_within_monte_carlo_error():
    chains, lr, beta, wd, mu = 20_000, 0.01, 10.0, 0.5, 1.5
    theta, a = gaussian_chains(SGLD, chains, [1.0, 3.0], mu, 800, lr, beta, weight_decay=wd)
    k = a + wd  # posterior precision / beta
    mean = a * mu / k
    # Euler-Maruyama on this OU process: stationary variance (2 lr / beta) / (1 - (1 - lr k)^2), exactly
    discrete_var = (2 * lr / beta) / (1 - (1 - lr * k) ** 2)
    posterior_var = 1 / (beta * k)
    got_mean, got_var = theta.mean(0), theta.var(0)
    assert torch.all((got_mean - mean).abs() < 4 * (discrete_var / chains).sqrt())
    assert torch.all((got_var / discrete_var - 1).abs() < 4 * math.sqrt(2 / chains))
    assert torch.all((discrete_var / posterior_var - 1).abs() < 0.02)  # the step's bias is small here


def test_psgld_samples_the_same_gaussian_within_a_few_percent():
    # the preconditioner changes the path, not the target; Li et al.'s neglected Gamma term and the running
    # average's fluctuation bias the variance slightly (measured 2 % and 1 % here; 1.4 % Monte-Carlo error)
    chains, lr, beta, mu = 10_000, 0.002, 10.0, 1.5
    theta, a = gaussian_chains(PSGLD, chains, [1.0, 3.0], mu, 6000, lr, beta, alpha=0.9999)
    posterior_var = 1 / (beta * a)
    assert torch.all((theta.mean(0) - mu).abs() < 4 * (posterior_var / chains).sqrt())
    assert torch.all((theta.var(0) / posterior_var - 1).abs() < 0.05)


def test_temperature_zero_is_gradient_descent():
    start, loss_fn = quadratic_problem()
    a, b = (torch.nn.Parameter(p.clone()) for p in start)
    sgd_a, sgd_b = (torch.nn.Parameter(p.clone()) for p in start)
    opt, sgd = SGLD([a, b], lr=0.1, temperature=0.0), torch.optim.SGD([sgd_a, sgd_b], lr=0.1)
    for o, (x, y) in ((opt, (a, b)), (sgd, (sgd_a, sgd_b))):
        for _ in range(3):

            def closure(o=o, x=x, y=y):
                o.zero_grad()
                loss = loss_fn(x, y)
                loss.backward()
                return loss

            o.step(closure)
    # no noise at all (a single draw would move them by ~1e-1); equal up to the fused multiply-add in SGD
    torch.testing.assert_close(a, sgd_a, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(b, sgd_b, rtol=1e-15, atol=1e-15)


def stepper(opt, param):
    def closure():
        opt.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    return closure


def test_the_collector_keeps_thinned_samples_after_burn_in_up_to_the_cap():
    param = torch.nn.Parameter(torch.ones(3))
    opt = SGLD([param], lr=0.01, train_size=10, burn_in=5, thinning=3, max_samples=2, seed=0)
    states = []
    for _ in range(15):
        opt.step(stepper(opt, param))
        states.append(param.detach().clone())
    # steps 8, 11, 14 qualify (after burn-in, every third); the cap keeps the last two
    assert len(opt.samples) == 2
    assert torch.equal(opt.samples[0][0], states[10]) and torch.equal(opt.samples[1][0], states[13])
    chain = param.detach().clone()
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        with opt.sampled_params(generator=generator):
            seen.add(tuple(param.detach().tolist()))
        assert torch.equal(param, chain)  # restored exactly
    assert seen == {tuple(states[10].tolist()), tuple(states[13].tolist())}


def test_resuming_from_a_state_dict_continues_the_same_chain():
    def run(steps, state=None):
        param = torch.nn.Parameter(torch.ones(5))
        opt = PSGLD([param], lr=0.01, train_size=10, thinning=2, max_samples=3, seed=4)
        if state is not None:
            param.data.copy_(state["param"])
            opt.load_state_dict(state["opt"])
        for _ in range(steps):
            opt.step(stepper(opt, param))
        return param, opt

    straight, straight_opt = run(8)
    half, half_opt = run(4)
    buffer = __import__("io").BytesIO()
    torch.save({"param": half.detach(), "opt": half_opt.state_dict()}, buffer)
    buffer.seek(0)
    resumed, resumed_opt = run(4, torch.load(buffer, weights_only=True))
    assert torch.equal(resumed, straight)
    assert len(resumed_opt.samples) == 3
    for a, b in zip(resumed_opt.samples, straight_opt.samples, strict=True):
        assert torch.equal(a[0], b[0])


def test_polynomial_decay_is_welling_and_tehs_schedule():
    param = torch.nn.Parameter(torch.ones(1))
    opt = SGLD([param], lr=0.1, train_size=1)
    schedule = PolynomialDecayLR(opt, b=10.0, gamma=0.55)
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        opt.step(stepper(opt, param))
        schedule.step()
    a = 0.1 * 10.0**0.55  # epsilon_t = a (b + t)^-gamma with a chosen so that epsilon_0 = 0.1
    assert rates == pytest.approx([a * (10.0 + t) ** -0.55 for t in range(5)], rel=1e-12)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda p: SGLD(p, temperature=-1.0), "temperature must be >= 0, got -1.0"),
        (lambda p: SGLD(p, thinning=0), "thinning must be an integer >= 1, got 0"),
        (lambda p: SGLD(p, lr=0.0), "lr must be > 0, got 0.0"),
        (lambda p: PSGLD(p, alpha=1.0), r"alpha must lie in \[0, 1\), got 1.0"),
        (lambda p: PolynomialDecayLR(SGLD(p), gamma=2.0), r"PolynomialDecayLR.gamma must lie in \[0, 1\], got 2.0"),
    ],
)
def test_bad_settings_are_one_line(build, match):
    with pytest.raises(ValueError, match=match):
        build([torch.nn.Parameter(torch.ones(2))])


def test_a_missing_training_set_size_is_explained():
    param = torch.nn.Parameter(torch.ones(2))
    opt = SGLD([param])
    with pytest.raises(ValueError, match=r"SGLD needs train_size \(N, the number of training examples"):
        opt.step(stepper(opt, param))
