"""NASMC: the SMC sweep against a Kalman filter's exact likelihood on a 1-D linear-Gaussian state-space model, its
weights, ESS and ancestry, the bootstrap filter as the special case q = transition, the inclusive-KL update
moving a proposal toward the posterior, and the LV-RNN model's gradients, padding invariance and sampling."""
from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from pipelines.errors import SeqlvmError
from seqlvm.models import MODELS
from seqlvm.models.fields import validate_config
from seqlvm.models.nasmc import (NASMC, NASMCConfig, diagonal_gaussian, draw_ancestors, markov_step,
                                 normalised_log_weights, smc)

A, Q, R, S0 = 0.9, 0.5, 1.0, 1.0  # z_t = A z_{t-1} + N(0, Q), x_t = z_t + N(0, R), z_1 ~ N(0, S0)
SIZES = {"hidden_dim": 8, "latent_dim": 2, "feature_dim": 8, "proposal_hidden_dim": 8, "proposal_components": 2}


def transition(a=A):
    def p(z_previous: torch.Tensor, t: int) -> D.Distribution:
        if t == 0:
            return diagonal_gaussian(torch.zeros_like(z_previous), torch.full_like(z_previous, math.log(S0)))
        return diagonal_gaussian(a * z_previous, torch.full_like(z_previous, math.log(Q)))
    return p


def emission(z: torch.Tensor, t: int) -> D.Distribution:
    return diagonal_gaussian(z, torch.full_like(z, math.log(R)))


def optimal_proposal(state, x, t):
    """p(z_t | z_{t-1}, x_t) of the linear-Gaussian model, in closed form."""
    z_previous = state["z"]
    prior_mean, prior_var = (0.0 * z_previous, S0) if t == 0 else (A * z_previous, Q)
    var = 1.0 / (1.0 / prior_var + 1.0 / R)
    mean = var * (prior_mean / prior_var + x.unsqueeze(1) / R)
    return diagonal_gaussian(mean, torch.full_like(mean, math.log(var))), {}


def simulate(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, 1, generator=generator) * math.sqrt(S0)
    xs = []
    for t in range(steps):
        if t:
            z = A * z + torch.randn(batch, 1, generator=generator) * math.sqrt(Q)
        xs.append(z + torch.randn(batch, 1, generator=generator) * math.sqrt(R))
    return torch.stack(xs, 1)  # (B, T, 1)


def kalman_log_likelihood(x: torch.Tensor, a=A) -> torch.Tensor:
    """Exact log p(x_{1:T}) per sequence of (B, T, 1) observations, differentiable in `a`."""
    mean, var = torch.zeros(x.size(0), dtype=x.dtype), torch.full((x.size(0),), S0, dtype=x.dtype)
    total = torch.zeros(x.size(0), dtype=x.dtype)
    for t in range(x.size(1)):
        if t:
            mean, var = a * mean, a * a * var + Q
        innovation_var = var + R
        total = total + D.Normal(mean, innovation_var.sqrt()).log_prob(x[:, t, 0])
        gain = var / innovation_var
        mean, var = mean + gain * (x[:, t, 0] - mean), (1 - gain) * var
    return total


def run(x, particles, proposal=None, a=A, **options):
    state = {"z": x.new_zeros(x.size(0), particles, 1)}
    mask = torch.ones(x.shape[:2])
    return smc(markov_step(transition(a), emission, x, proposal), state, mask, particles, **options)


def test_weights_are_normalised_and_ess_lies_between_one_and_the_particle_count():
    torch.manual_seed(0)
    result = run(simulate(4, 15), particles=50)
    assert torch.allclose(result.log_weights.exp().sum(-1), torch.ones(4), atol=1e-5)
    assert (result.ess >= 1 - 1e-4).all() and (result.ess <= 50 + 1e-3).all()
    # The adaptive rule resamples some steps and not others.
    assert result.resampled.any() and not result.resampled[:, 1:].all()


@pytest.mark.parametrize("threshold, expected", [(0.0, False), (1.0, True)])
def test_ess_threshold_zero_never_resamples_and_one_always_does(threshold, expected):
    torch.manual_seed(0)
    result = run(simulate(3, 8), particles=20, ess_threshold=threshold)
    assert (result.resampled[:, 1:] == expected).all() and not result.resampled[:, 0].any()


@pytest.mark.parametrize("scheme", ["multinomial", "systematic"])
def test_ancestors_are_drawn_in_proportion_to_the_weights(scheme):
    torch.manual_seed(0)
    weights = torch.tensor([0.5, 0.3, 0.15, 0.05])
    log_w = weights.log().expand(5000, 4)
    counts = torch.nn.functional.one_hot(draw_ancestors(log_w, scheme), 4).sum(1).float()  # (5000, 4)
    assert torch.allclose(counts.mean(0) / 4, weights, atol=0.02)
    if scheme == "systematic":  # each particle gets floor or ceil of P w copies
        assert ((counts - 4 * weights).abs() < 1).all()


def test_resampling_keeps_each_particle_s_history_consistent_with_its_ancestors():
    torch.manual_seed(0)
    x = simulate(3, 10)
    steps, particles, sampled = x.size(1), 5, []
    inner = markov_step(transition(), emission, x)

    def step_with_history(state, t):  # every particle carries its own path z_{1:t}
        state, log_target, log_q = inner(state, t)
        sampled.append(state["z"][..., 0])
        path = state["path"].clone()
        path[..., t] = state["z"][..., 0]
        return {**state, "path": path}, log_target, log_q

    state = {"z": torch.zeros(3, particles, 1), "path": torch.zeros(3, particles, steps)}
    result = smc(step_with_history, state, torch.ones(3, steps), particles, ess_threshold=1.0)
    lineage = torch.arange(particles).expand(3, particles)
    for t in reversed(range(steps)):
        assert torch.equal(result.state["path"][..., t], sampled[t].gather(1, lineage))
        lineage = result.ancestors[:, t].gather(1, lineage)
    assert len(set(result.state["path"][0, :, 0].tolist())) < particles  # the paths did coalesce


@pytest.mark.parametrize("proposal, scheme", [(None, "multinomial"), (None, "systematic"),
                                              (optimal_proposal, "multinomial")])
def test_smc_log_marginal_matches_the_kalman_filter(proposal, scheme):
    torch.manual_seed(0)
    x = simulate(4, 15, seed=1)
    estimate = run(x, particles=2000, proposal=proposal, resampling=scheme).log_marginal
    # About 3 Monte Carlo standard deviations; a weighting mistake is off by nats.
    assert torch.allclose(estimate.double(), kalman_log_likelihood(x.double()), atol=0.3)


def test_the_optimal_proposal_gives_a_less_variable_estimate_than_the_bootstrap_filter():
    torch.manual_seed(0)
    x = simulate(1, 20, seed=2).expand(200, 20, 1)  # 200 independent sweeps of one sequence
    bootstrap = run(x, particles=20).log_marginal
    optimal = run(x, particles=20, proposal=optimal_proposal).log_marginal
    assert optimal.var() < 0.5 * bootstrap.var()


def test_the_bootstrap_filter_is_smc_with_the_transition_as_proposal():
    x = simulate(3, 12)
    torch.manual_seed(3)
    bootstrap = run(x, particles=30)
    torch.manual_seed(3)
    explicit = run(x, particles=30, proposal=lambda state, x_t, t: (transition()(state["z"], t), {}))
    assert torch.allclose(bootstrap.log_marginal, explicit.log_marginal, atol=1e-5)
    assert torch.equal(bootstrap.ancestors, explicit.ancestors)


def test_the_smc_gradient_without_resampling_matches_the_kalman_gradient():
    torch.manual_seed(0)
    x = simulate(2, 4, seed=3)
    a = torch.tensor(A, requires_grad=True)
    estimate = run(x, particles=5000, a=a, ess_threshold=0.0).log_marginal.sum()
    (smc_gradient,) = torch.autograd.grad(estimate, a)
    a64 = torch.tensor(A, dtype=torch.float64, requires_grad=True)
    (exact,) = torch.autograd.grad(kalman_log_likelihood(x.double(), a64).sum(), a64)
    assert abs(float(smc_gradient) - float(exact)) < 0.1 * abs(float(exact)) + 0.05


def test_the_inclusive_kl_update_moves_the_proposal_toward_the_posterior():
    """One step, z ~ N(0, 1), x = z + N(0, R): the posterior is N(x / (1 + R), R / (1 + R))."""
    torch.manual_seed(0)
    x = torch.full((1, 1, 1), 2.0)
    post_mean, post_var = 2.0 / (1 + R), R / (1 + R)
    mean, log_var = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)

    def inclusive_kl() -> float:  # KL(posterior || q) in closed form
        var = log_var.exp().item()
        return 0.5 * (math.log(var / post_var) + (post_var + (post_mean - mean.item()) ** 2) / var - 1)

    def proposal(state, x_t, t):
        z = state["z"]
        return diagonal_gaussian(mean.expand_as(z), log_var.expand_as(z)), {}

    before = inclusive_kl()
    for _ in range(25):  # plain gradient descent (torch.optim's first import alone takes seconds)
        gradients = torch.autograd.grad(run(x, particles=300, proposal=proposal).proposal_loss.mean(), [mean, log_var])
        with torch.no_grad():
            for parameter, gradient in zip((mean, log_var), gradients):
                parameter -= 0.5 * gradient
    assert inclusive_kl() < 0.1 * before
    assert abs(mean.item() - post_mean) < 0.15 and abs(log_var.exp().item() - post_var) < 0.15


def tiny(**options) -> NASMC:
    torch.manual_seed(0)
    return NASMC(NASMCConfig(**SIZES, particles=4, **options), 6)


def piano_rolls(lengths: list[int], pad_to: int) -> dict:
    generator = torch.Generator().manual_seed(1)
    frames = torch.zeros(len(lengths), pad_to, 6)
    for i, n in enumerate(lengths):
        frames[i, :n] = (torch.rand(n, 6, generator=generator) < 0.3).float()
    return {"frames": frames, "lengths": torch.tensor(lengths)}


def test_the_model_s_log_marginal_and_the_proposal_s_loss_train_disjoint_parameters():
    model = tiny()
    batch = piano_rolls([5, 3], 5)
    result = model.sweep(batch["frames"], batch["lengths"])
    proposal_params = list(model.proposal.parameters())
    model_params = [p for name, p in model.named_parameters() if not name.startswith("proposal.")]

    def gradient_norm(value, params):
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return sum(float(g.abs().sum()) for g in grads if g is not None)

    assert gradient_norm(result.log_marginal.sum(), proposal_params) == 0.0
    assert gradient_norm(result.log_marginal.sum(), model_params) > 0.0
    assert gradient_norm(result.proposal_loss.sum(), model_params) == 0.0
    assert gradient_norm(result.proposal_loss.sum(), proposal_params) > 0.0


def test_forward_reports_the_smc_bound_as_recon_with_no_kl():
    model = tiny()
    batch = piano_rolls([5, 3], 5)
    torch.manual_seed(2)
    out = model(batch)
    torch.manual_seed(2)
    log_marginal = model.sweep(batch["frames"], batch["lengths"]).log_marginal
    assert torch.allclose(out.totals["recon"], -log_marginal.sum())
    assert float(out.totals["kl"]) == 0.0 and float(out.totals["steps"]) == 8.0
    assert 1.0 <= float(out.totals["ess"]) / 2 <= 4.0


@pytest.mark.parametrize("bootstrap", [False, True])
def test_the_log_marginal_per_sequence_does_not_depend_on_padding(bootstrap):
    model = tiny(bootstrap=bootstrap)
    estimates = []
    for pad_to in (5, 9):
        batch = piano_rolls([5, 3], pad_to)
        torch.manual_seed(4)
        estimates.append(model.log_importance_weights(batch, 3))
    assert estimates[0].shape == (3, 2)
    assert torch.allclose(estimates[0], estimates[1], atol=1e-5)


def test_the_bootstrap_variant_has_no_proposal_to_learn():
    assert tiny(bootstrap=True).proposal is None
    assert tiny().proposal is not None


def test_sample_prior_gives_binary_piano_rolls_of_the_asked_shape():
    frames = tiny().sample_prior(3, steps=7)
    assert frames.shape == (3, 7, 6) and set(frames.unique().tolist()) <= {0.0, 1.0}


def test_normalising_log_weights_gives_a_distribution():
    log_w = normalised_log_weights(torch.randn(3, 7) * 5)
    assert torch.allclose(log_w.exp().sum(-1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("field, value", [("resampling", "stratified"), ("ess_threshold", 1.5), ("particles", 0)])
def test_bad_configs_are_refused(field, value):
    with pytest.raises(SeqlvmError, match=f"model.{field}"):
        validate_config(NASMCConfig(**{field: value}), "model")


def test_the_model_is_registered():
    assert MODELS["nasmc"] is NASMC
