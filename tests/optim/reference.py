"""Float64 re-derivations of each optimizer, written from the papers' equations (not from aipflow's code).

Parameters are plain lists of float64 tensors; ``grad_fn(params, batch_slice) -> list of gradients``.
"""

from __future__ import annotations

import math

import torch


def _per_param(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def sgd_momentum(params, grads, bufs, lr, momentum, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD semantics: d = g + wd w; b = mu b + d (b = d at the first step); w -= lr (d + mu b | b).
    ``weight_decay`` may be a list, one per parameter (a decay / no-decay split)."""
    decays = _per_param(weight_decay, len(params))
    for i, (w, g) in enumerate(zip(params, grads)):
        d = g + decays[i] * w
        bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
        step = d + momentum * bufs[i] if nesterov else bufs[i]
        params[i] = w - lr * step


def adamw(params, grads, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    decays = _per_param(weight_decay, len(params))
    state["t"] = state.get("t", 0) + 1
    t = state["t"]
    b1, b2 = betas
    for i, (w, g) in enumerate(zip(params, grads)):
        m = state.setdefault(("m", i), torch.zeros_like(w))
        v = state.setdefault(("v", i), torch.zeros_like(w))
        w = w * (1 - lr * decays[i])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[("m", i)], state[("v", i)] = m, v
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        params[i] = w - lr * m_hat / (v_hat.sqrt() + eps)


def sam_perturbation(params, grads, rho, adaptive=False, eta=0.01):
    """Foret et al. eq. 2: e = rho g / ||g||; Kwon et al. eq. 9: e = rho T^2 g / ||T g||, T = |w| + eta.

    g is the gradient of the whole model, so ||.|| is one norm over every parameter; ``rho`` may be a list, one
    per parameter (a parameter group's own radius scales its part of e, the norm stays global)."""
    rhos = _per_param(rho, len(params))
    t = [w.abs() + eta if adaptive else torch.ones_like(w) for w in params]
    norm = math.sqrt(sum(((ti * g) ** 2).sum().item() for ti, g in zip(t, grads)))
    return [r * ti * ti * g / norm if norm > 0 else torch.zeros_like(g) for r, ti, g in zip(rhos, t, grads)]


def bsam_step(params, state, grad_fn, noise_fn, n_eff, m_sub, lr, rho, b1, b2, prior_precision, damping):
    """Moellenhoff & Khan 2023 (bSAM), one step over m_sub sub-batches; state holds 'gbar' and 's'."""
    delta = prior_precision / n_eff
    s = state["s"]
    g_eps_sum = [torch.zeros_like(w) for w in params]
    h_sum = [torch.zeros_like(w) for w in params]
    for k in range(m_sub):
        z = noise_fn()
        theta = [m + zi / torch.sqrt(n_eff * si) for m, zi, si in zip(params, z, s)]
        g = grad_fn(theta, k)
        eps = [rho * gi / si for gi, si in zip(g, s)]
        g_eps = grad_fn([m + e for m, e in zip(params, eps)], k)
        for i in range(len(params)):
            g_eps_sum[i] += g_eps[i]
            h_sum[i] += torch.sqrt(s[i]) * g[i].abs()
    new_params = []
    for i, m in enumerate(params):
        g_eps = g_eps_sum[i] / m_sub
        h = h_sum[i] / m_sub
        state["gbar"][i] = b1 * state["gbar"][i] + (1 - b1) * (g_eps + delta * m)
        new_params.append(m - lr * state["gbar"][i] / s[i])
        s[i] = b2 * s[i] + (1 - b2) * (h + damping + delta)
    params[:] = new_params


def ivon_step(params, state, grad_fn, noise_fn, ess, lr, h0, b1, b2, wd, samples, clip=math.inf, rescale=True):
    """Shen et al. 2024, Algorithm 1, with `samples` MC samples; state holds 'g', 'h', 't'."""
    state["t"] += 1
    h = state["h"]
    sigma = [1 / torch.sqrt(ess * (hi + wd)) for hi in h]
    g_hat = [torch.zeros_like(w) for w in params]
    h_hat = [torch.zeros_like(w) for w in params]
    for _ in range(samples):
        eps = noise_fn()
        theta = [m + s * e for m, s, e in zip(params, sigma, eps)]
        g = grad_fn(theta, None)
        for i in range(len(params)):
            g_hat[i] += g[i] / samples
            h_hat[i] += g[i] * (theta[i] - params[i]) / sigma[i] ** 2 / samples
    alpha = lr * (h0 + wd) if rescale else lr
    for i, m in enumerate(params):
        state["g"][i] = b1 * state["g"][i] + (1 - b1) * g_hat[i]
        h[i] = b2 * h[i] + (1 - b2) * h_hat[i] + 0.5 * (1 - b2) ** 2 * (h[i] - h_hat[i]) ** 2 / (h[i] + wd)
        g_bar = state["g"][i] / (1 - b1 ** state["t"])
        update = ((g_bar + wd * m) / (h[i] + wd)).clamp(-clip, clip)
        params[i] = m - alpha * update


def sgld_step(params, grads, noises, lr, weight_decay, temperature, n):
    """Welling & Teh 2011, eq. 4, in their notation: d theta = eps/2 (grad log p(theta) + N grad log-lik-mean)
    + eta, eta ~ N(0, eps T), with the Gaussian prior log p = -N wd/2 ||theta||^2 and the step eps = 2 lr / N."""
    eps = 2 * lr / n
    for i, (w, g, z) in enumerate(zip(params, grads, noises)):
        grad_log_prior = -n * weight_decay * w
        grad_log_lik = -n * g
        params[i] = w + eps / 2 * (grad_log_prior + grad_log_lik) + math.sqrt(eps * temperature) * z


def psgld_step(params, grads, square_avgs, noises, lr, weight_decay, temperature, n, alpha, lam):
    """Li et al. 2016, Algorithm 1 (Gamma left out, as they do): V = a V + (1 - a) g_bar^2 with g_bar the mean
    log-likelihood gradient; G = diag(1 / (lam + sqrt V)); theta += eps/2 G (grad log p + N g_bar) + N(0, eps T G),
    eps = 2 lr / N."""
    eps = 2 * lr / n
    for i, (w, g, z) in enumerate(zip(params, grads, noises)):
        g_bar = -g
        square_avgs[i] = alpha * square_avgs[i] + (1 - alpha) * g_bar * g_bar
        big_g = 1.0 / (lam + square_avgs[i].sqrt())
        drift = eps / 2 * big_g * (-n * weight_decay * w + n * g_bar)
        params[i] = w + drift + (eps * temperature * big_g).sqrt() * z
