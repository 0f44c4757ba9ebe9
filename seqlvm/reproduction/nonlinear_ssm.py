"""The classic nonlinear state-space model (Kitagawa 1996) on which Gu, Ghahramani & Turner (2015, Section 5)
compare NASMC's learned proposal with the bootstrap filter:

    x_1 ~ N(0, 5),   x_t = x_{t-1} / 2 + 25 x_{t-1} / (1 + x_{t-1}^2) + 8 cos(1.2 t) + v_t,   v_t ~ N(0, 10)
    y_t = x_t^2 / 20 + w_t,   w_t ~ N(0, 1).

Here: its distributions, its simulation, the exact log p(y_{1:T}) by a grid filter (the state is 1-D, so
quadrature is exact: 1001 and 6001 grid points agree to 1e-4 nats), its NASMC proposal (an LSTM mixture-density
network) and a particle filter of either kind, run by `seqlvm.models.nasmc.smc`.
"""
from __future__ import annotations

import math

import torch
from torch import distributions as D
from torch import nn

from seqlvm.models.nasmc import MixtureDensityLSTM, SMCResult, diagonal_gaussian, markov_step, smc

INITIAL_VAR, TRANSITION_VAR, EMISSION_VAR = 5.0, 10.0, 1.0
INPUT_SCALE = 10.0  # the proposal network reads states and observations divided by this


def transition_mean(x_previous: torch.Tensor, t: int) -> torch.Tensor:
    """E[x_t | x_{t-1}] for the 0-based step t (the paper's time index is t + 1); 0 at the first step."""
    if t == 0:
        return torch.zeros_like(x_previous)
    return x_previous / 2 + 25 * x_previous / (1 + x_previous ** 2) + 8 * math.cos(1.2 * (t + 1))


def transition_var(t: int) -> float:
    return INITIAL_VAR if t == 0 else TRANSITION_VAR


def transition(x_previous: torch.Tensor, t: int) -> D.Distribution:
    """p(x_t | x_{t-1}) over (B, P, 1) particles."""
    return diagonal_gaussian(transition_mean(x_previous, t), torch.full_like(x_previous, math.log(transition_var(t))))


def emission(x: torch.Tensor, t: int) -> D.Distribution:
    """p(y_t | x_t) over (B, P, 1) particles."""
    return diagonal_gaussian(x ** 2 / 20, torch.full_like(x, math.log(EMISSION_VAR)))


def simulate(batch: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """(B, T, 1) observations y drawn from the model."""
    x = torch.zeros(batch, 1)
    ys = []
    for t in range(steps):
        x = transition_mean(x, t) + math.sqrt(transition_var(t)) * torch.randn(batch, 1, generator=generator)
        ys.append(x ** 2 / 20 + math.sqrt(EMISSION_VAR) * torch.randn(batch, 1, generator=generator))
    return torch.stack(ys, 1)


def grid_log_likelihood(y: torch.Tensor, points: int = 1001, bound: float = 45.0) -> torch.Tensor:
    """(B,) log p(y_{1:T}) of (B, T, 1) observations, exact to quadrature: the filtering recursion on a grid of
    `points` states in [-bound, bound] (normalised filter densities, so nothing underflows)."""
    grid = torch.linspace(-bound, bound, points, dtype=torch.float64)
    spacing = float(grid[1] - grid[0])
    y = y[..., 0].double()
    total = torch.zeros(y.size(0), dtype=torch.float64)
    filtered = None
    for t in range(y.size(1)):
        if t == 0:
            predicted = D.Normal(0.0, math.sqrt(INITIAL_VAR)).log_prob(grid).exp().expand(y.size(0), points)
        else:  # kernel[i, j] = p(x_t = grid_j | x_{t-1} = grid_i)
            offsets = grid[None, :] - transition_mean(grid, t)[:, None]
            kernel = torch.exp(-0.5 * offsets ** 2 / TRANSITION_VAR) / math.sqrt(2 * math.pi * TRANSITION_VAR)
            predicted = filtered @ kernel * spacing
        joint = predicted * D.Normal(grid ** 2 / 20, math.sqrt(EMISSION_VAR)).log_prob(y[:, t, None]).exp()
        evidence = joint.sum(-1) * spacing
        total = total + evidence.log()
        filtered = joint / evidence[:, None]
    return total


class NonlinearSSMProposal(nn.Module):
    """NASMC's proposal q(x_t | x_{t-1}, y_{1:t}) for this model: an LSTM-MDN over (y_t, x_{t-1}, E[x_t | x_{t-1}]),
    its mixture centred and scaled on the transition (so that an untrained one is close to the bootstrap filter)."""

    def __init__(self, hidden: int, components: int):
        super().__init__()
        self.network = MixtureDensityLSTM(3, 1, hidden, components)

    def forward(self, state: dict, y: torch.Tensor, t: int):
        x_previous = state["z"]
        mean = transition_mean(x_previous, t)
        scale = torch.full_like(mean, math.sqrt(transition_var(t)))
        inputs = torch.cat([y.unsqueeze(1).expand_as(mean), x_previous, mean], -1) / INPUT_SCALE
        return self.network(state, inputs, loc=mean, scale=scale)


def particle_filter(y: torch.Tensor, particles: int, proposal: NonlinearSSMProposal | None,
                    ess_threshold: float = 0.5) -> SMCResult:
    """One SMC sweep over (B, T, 1) observations: the bootstrap filter without a proposal, NASMC's with one."""
    state = {"z": torch.zeros(y.size(0), particles, 1)}
    if proposal is not None:
        state.update(proposal.network.initial_state(y.size(0), particles, y))
    return smc(markov_step(transition, emission, y, proposal), state, torch.ones(y.shape[:2]), particles,
               ess_threshold)


__all__ = ["NonlinearSSMProposal", "emission", "grid_log_likelihood", "particle_filter", "simulate", "transition",
           "transition_mean"]
