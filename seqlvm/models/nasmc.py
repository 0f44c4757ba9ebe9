"""NASMC (Gu, Ghahramani & Turner 2015, Neural Adaptive Sequential Monte Carlo): sequential Monte Carlo whose
proposal is an LSTM mixture-density network adapted by descending the inclusive KL, here driving a latent
variable RNN (LV-RNN) over frames.

SMC (Section 2). For p(z_{1:T}, x_{1:T}) = prod_t p(z_t | z_{<t}, x_{<t}) p(x_t | z_{<=t}, x_{<t}) and a proposal
q(z_{1:T} | x_{1:T}) = prod_t q(z_t | z_{<t}, x_{<=t}) (the excerpt's Eq. 5), P particles carry normalised
weights w~_t^i:

    alpha_t^i     = p(z_t^i | ...) p(x_t | z_t^i, ...) / q(z_t^i | ...)      the incremental weight
    w~_t^i        = w~_{t-1}^i alpha_t^i / sum_j w~_{t-1}^j alpha_t^j           (the weight recursion)
    log p^(x)     = sum_t log sum_i w~_{t-1}^i alpha_t^i                      an unbiased estimate of p(x) in exp
    ESS_t         = 1 / sum_i (w~_t^i)^2

Before step t the particles are resampled (multinomially, or systematically) when ESS_{t-1} < ess_threshold * P
(the adaptive rule of the paper's footnote 1; threshold 1 resamples at every step as plain SIR, 0 never as SIS);
resampling sets w~_{t-1} = 1/P and records the ancestors a_t^i.

Learning (Section 3, Algorithm 1). The proposal descends the inclusive KL[p(z | x) || q(z | x)] through the
filtering approximation of its gradient (Eq. 1):

    - d/dphi KL ~= sum_t sum_i w~_t^i d/dphi log q(z_t^i | x_{1:t}, z_{1:t-1}^{A_{t-1}^i}),

the weights held fixed. The model follows the SMC estimate of the log-likelihood gradient: the gradient of
log p^(x) with the samples, ancestors and proposal densities held fixed, i.e. sum_t sum_i w~_t^i d/dtheta
log p(x_t, z_t^i | ...) when resampling at every step (Fisher's identity, filtering approximation; derived in
the paper's supplementary, which the excerpt lacks: filled from our reading of the paper). Both go into one
loss, the mean over sequences of -log p^(x) - sum_t sum_i w~_t^i log q(z_t^i), whose two terms touch disjoint
parameters, so one optimiser over everything performs both updates.

Proposal (Section 4): an LSTM reads x_t and z_{t-1} (so its state summarises x_{1:t}, z_{1:t-1}) and sets a
mixture of diagonal Gaussians (an MDN); we also give it the model's state h_{t-1} as gradient-stopped context.

LV-RNN (Section 5, music, Table 2: JSB 3.99 nats per step with NASMC, 4.26 with the bootstrap filter; the
excerpt gives no equations, so this is our reading: the VRNN-style generative model with z fed back into h):

    transition  p(z_t | h_{t-1})      = N(mu(h_{t-1}), sigma^2(h_{t-1}))
    emission    p(x_t | z_t, h_{t-1})  Bernoulli over the 88 keys (or any head of seqlvm.models.heads)
    recurrence  h_t = LSTM([phi_x(x_t), phi_z(z_t)], h_{t-1})

Our choices where the paper is silent: the MDN's means and scales are a residual on the transition's
(`residual_proposal`, so an untrained proposal starts near the bootstrap filter), sizes, particle count and
resampling scheme. `bootstrap: true` gives the paper's "LV-RNN (Bootstrap)" column: the transition as proposal.

`smc` and `markov_step` are pure and model-agnostic: the tests run them on a linear-Gaussian model against a
Kalman filter, and `seqlvm reproduce nasmc-ssm` on the classic nonlinear state-space model
(seqlvm/reproduction/nonlinear_ssm.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import distributions as D
from torch import nn

from pipelines.errors import SeqlvmError
from seqlvm.models.base import FrameModel, ModelOutput, step_mask
from seqlvm.models.fields import rate, size
from seqlvm.models.heads import build_head, check_output, gaussian_parameters, mlp
from seqlvm.models.latent_rnn import ancestral_frames

RESAMPLING = ("multinomial", "systematic")

# Particle states: name -> (B, P, ...) tensor; resampling reorders every entry along the particle dimension.
ParticleState = dict[str, torch.Tensor]
# (state after step t-1, t) -> (state after step t, log p(z_t, x_t | past) and log q(z_t | past), each (B, P)).
StepFunction = Callable[[ParticleState, int], tuple[ParticleState, torch.Tensor, torch.Tensor]]


@dataclass
class NASMCConfig:
    hidden_dim: int = size(256)  # the LV-RNN's LSTM
    latent_dim: int = size(16)
    feature_dim: int = size(128)  # phi_x, phi_z, the prior and emission networks
    output: str = "bernoulli"  # gauss | gmm | bernoulli | strokes (default: what the data's manifest names)
    components: int = size(20)  # GMM components of a gmm output
    proposal_hidden_dim: int = size(128)  # the proposal's LSTM
    proposal_components: int = size(5)  # Gaussians in the proposal's mixture density
    residual_proposal: bool = True  # proposal means and scales relative to the transition's
    particles: int = size(8)
    ess_threshold: float = rate(0.5)  # resample when ESS < ess_threshold * particles
    resampling: str = "multinomial"  # multinomial | systematic
    bootstrap: bool = False  # propose from the transition (the bootstrap filter) and learn no proposal

    def validate(self) -> None:
        check_output(self.output)
        if self.resampling not in RESAMPLING:
            raise SeqlvmError(f"model.resampling must be one of {', '.join(RESAMPLING)}, not {self.resampling!r}")


# ----------------------------------------------------------------------------------------------- SMC itself

@dataclass
class SMCResult:
    log_marginal: torch.Tensor  # (B,) log p^(x), differentiable in the model through the weights
    proposal_loss: torch.Tensor  # (B,) -sum_t sum_i w~_t^i log q(z_t^i), weights detached (Eq. 1)
    ess: torch.Tensor  # (B, T) effective sample size after weighting at each step
    ancestors: torch.Tensor  # (B, T, P) a_t^i: the particle of step t-1 that particle i extends at step t
    resampled: torch.Tensor  # (B, T) bool: whether the particles were resampled before step t
    log_weights: torch.Tensor  # (B, P) normalised log weights after the last real step
    state: ParticleState  # the particles after the last step


def normalised_log_weights(log_weights: torch.Tensor) -> torch.Tensor:
    return log_weights - torch.logsumexp(log_weights, dim=-1, keepdim=True)


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """1 / sum_i w~_i^2 of normalised log weights (..., P): between 1 (one particle) and P (uniform)."""
    return torch.exp(-torch.logsumexp(2 * log_weights, dim=-1))


def draw_ancestors(log_weights: torch.Tensor, scheme: str = "multinomial") -> torch.Tensor:
    """(B, P) indices drawn with probabilities w~ (normalised log weights (B, P)) by inverting their CDF at
    P uniforms: independent ones (multinomial) or one shared offset on a grid of 1/P (systematic)."""
    batch, particles = log_weights.shape
    if scheme == "systematic":
        grid = torch.arange(particles, device=log_weights.device, dtype=log_weights.dtype)
        uniforms = (grid + torch.rand(batch, 1, device=log_weights.device, dtype=log_weights.dtype)) / particles
    else:
        uniforms = torch.rand(batch, particles, device=log_weights.device, dtype=log_weights.dtype)
    cdf = torch.cumsum(log_weights.detach().exp(), dim=-1)
    # Rounding can leave the CDF's last entry just below a uniform: such a draw belongs to the last particle.
    return torch.searchsorted(cdf, uniforms, right=True).clamp(max=particles - 1)


def select_particles(state: ParticleState, ancestors: torch.Tensor) -> ParticleState:
    """Each (B, P, ...) entry reordered so that particle i becomes the old particle ancestors[b, i]."""
    rows = torch.arange(ancestors.size(0), device=ancestors.device)[:, None]
    return {name: value[rows, ancestors] for name, value in state.items()}


def resample_if_degenerate(state: ParticleState, log_w: torch.Tensor, real: torch.Tensor, ess_threshold: float,
                           scheme: str) -> tuple[ParticleState, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resample the sequences whose ESS fell below ess_threshold * P (all of them at threshold 1) and which have a
    real step ahead. Returns the particles, their normalised log weights (1/P where resampled), the (B, P)
    ancestors (the identity where not) and the (B,) resampling decisions."""
    particles = log_w.size(-1)
    degenerate = effective_sample_size(log_w) < ess_threshold * particles
    resample = real & (degenerate | (ess_threshold >= 1.0))
    # Ancestors are drawn for every sequence, needed or not, so that each sequence sees the same random numbers
    # however the batch is padded.
    identity = torch.arange(particles, device=log_w.device).expand_as(log_w)
    ancestors = torch.where(resample[:, None], draw_ancestors(log_w, scheme), identity)
    log_w = torch.where(resample[:, None], torch.full_like(log_w, -math.log(particles)), log_w)
    return select_particles(state, ancestors), log_w, ancestors, resample


def smc(step: StepFunction, state: ParticleState, mask: torch.Tensor, particles: int, ess_threshold: float = 0.5,
        resampling: str = "multinomial") -> SMCResult:
    """One SMC sweep over a batch of B sequences of T steps, masked by (B, T) `mask` (0 on padding: a padded
    step changes no weight, estimate or particle). `state` holds the particles before the first step."""
    batch, steps = mask.shape
    real_steps = mask > 0
    log_w = mask.new_full((batch, particles), -math.log(particles))
    identity = torch.arange(particles, device=mask.device).expand(batch, particles)
    log_marginal, proposal_loss = mask.new_zeros(batch), mask.new_zeros(batch)
    ess, ancestry, resampled = [], [], []
    for t in range(steps):
        real = real_steps[:, t]
        if t == 0:
            ancestors, resample = identity, torch.zeros_like(real)
        else:
            state, log_w, ancestors, resample = resample_if_degenerate(state, log_w, real, ess_threshold, resampling)

        state, log_target, log_proposal = step(state, t)
        # The proposal density is a constant of the model's gradient (Fisher's identity) ...
        unnormalised = log_w + log_target - log_proposal.detach()
        step_log_marginal = torch.logsumexp(unnormalised, dim=-1)
        new_log_w = unnormalised - step_log_marginal[:, None]
        # ... and the weights are constants of the proposal's (Eq. 1).
        step_proposal_loss = -(new_log_w.detach().exp() * log_proposal).sum(-1)

        log_marginal = log_marginal + torch.where(real, step_log_marginal, torch.zeros_like(step_log_marginal))
        proposal_loss = proposal_loss + torch.where(real, step_proposal_loss, torch.zeros_like(step_proposal_loss))
        log_w = torch.where(real[:, None], new_log_w, log_w)
        ess.append(effective_sample_size(log_w.detach()))
        ancestry.append(ancestors)
        resampled.append(resample)
    return SMCResult(log_marginal, proposal_loss, torch.stack(ess, 1), torch.stack(ancestry, 1),
                     torch.stack(resampled, 1), log_w, state)


def markov_step(transition: Callable[[torch.Tensor, int], D.Distribution],
                emission: Callable[[torch.Tensor, int], D.Distribution], observations: torch.Tensor,
                proposal: Callable[[ParticleState, torch.Tensor, int], tuple[D.Distribution, ParticleState]]
                | None = None) -> StepFunction:
    """The SMC step of a Markov state-space model given as distributions over (B, P) particles:
    transition(z_{t-1}, t) = p(z_t | z_{t-1}) (z_{t-1} is the state's "z", zeros before the first step),
    emission(z_t, t) = p(x_t | z_t), observations (B, T, ...) and proposal(state, x_t, t) = (q(z_t | ...), extra
    state entries, e.g. an LSTM's). Without a proposal this is the bootstrap filter: q = the transition."""

    def step(state: ParticleState, t: int):
        prior = transition(state["z"], t)
        q, extra = (prior, {}) if proposal is None else proposal(state, observations[:, t], t)
        z = q.sample()
        x = observations[:, t].unsqueeze(1)
        log_prior = prior.log_prob(z)
        log_target = log_prior + emission(z, t).log_prob(x.expand(*z.shape[:2], *x.shape[2:]))
        # A bootstrap proposal is the transition held fixed: none of the model's gradient may cancel through it.
        log_q = log_prior.detach() if proposal is None else q.log_prob(z)
        return {**state, **extra, "z": z}, log_target, log_q

    return step


# ------------------------------------------------------------------------------------------- the proposal

def diagonal_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> D.Distribution:
    return D.Independent(D.Normal(mean, (0.5 * logvar).exp(), validate_args=False), 1, validate_args=False)


def gaussian_mixture(params: torch.Tensor, components: int, loc: torch.Tensor | None = None,
                     scale: torch.Tensor | None = None) -> D.Distribution:
    """A mixture of `components` diagonal Gaussians from (..., components * (1 + 2 d)) network outputs: mixing
    logits, means and log-variances; with `loc` and `scale` (..., d) the means are loc + scale * mean and the
    standard deviations scale * std."""
    logits, rest = params[..., :components], params[..., components:]
    mean, logvar = gaussian_parameters(rest.reshape(*rest.shape[:-1], components, -1))
    std = (0.5 * logvar).exp()
    if loc is not None:
        mean, std = loc.unsqueeze(-2) + scale.unsqueeze(-2) * mean, scale.unsqueeze(-2) * std
    return D.MixtureSameFamily(D.Categorical(logits=logits, validate_args=False),
                               D.Independent(D.Normal(mean, std, validate_args=False), 1, validate_args=False),
                               validate_args=False)


class MixtureDensityLSTM(nn.Module):
    """The NASMC proposal (Section 4): an LSTM over per-particle inputs whose state, beside an optional context,
    sets a Gaussian mixture (a mixture density network). Its state lives in the particles, as
    "proposal_h"/"proposal_c", so that resampling carries it along."""

    def __init__(self, input_dim: int, latent_dim: int, hidden_dim: int, components: int, context_dim: int = 0):
        super().__init__()
        self.components, self.hidden_dim = components, hidden_dim
        self.cell = nn.LSTMCell(input_dim, hidden_dim)
        self.mixture = nn.Linear(hidden_dim + context_dim, components * (1 + 2 * latent_dim))

    def initial_state(self, batch: int, particles: int, like: torch.Tensor) -> ParticleState:
        zeros = like.new_zeros(batch, particles, self.hidden_dim)
        return {"proposal_h": zeros, "proposal_c": zeros}

    def forward(self, state: ParticleState, inputs: torch.Tensor, context: torch.Tensor | None = None,
                loc: torch.Tensor | None = None, scale: torch.Tensor | None = None
                ) -> tuple[D.Distribution, ParticleState]:
        """q(z_t | ...) from (B, P, input_dim) inputs and (B, P, context_dim) context, and the new state."""
        lead = inputs.shape[:-1]
        h, c = self.cell(inputs.reshape(-1, inputs.size(-1)),
                         (state["proposal_h"].reshape(-1, self.hidden_dim),
                          state["proposal_c"].reshape(-1, self.hidden_dim)))
        h, c = h.view(*lead, -1), c.view(*lead, -1)
        features = h if context is None else torch.cat([h, context], -1)
        q = gaussian_mixture(self.mixture(features), self.components, loc, scale)
        return q, {"proposal_h": h, "proposal_c": c}


# ------------------------------------------------------------------------------------- the LV-RNN with NASMC

class NASMC(FrameModel):
    """A latent variable RNN over frames, trained and evaluated by SMC with an adapted LSTM-MDN proposal."""

    name = "nasmc"
    config_class = NASMCConfig

    @property
    def particles_per_sample(self) -> int:
        return self.config.particles

    def __init__(self, config: NASMCConfig, frame_dim: int):
        super().__init__(config, frame_dim)
        c = config
        self.phi_x = mlp(frame_dim, c.feature_dim, 1)
        self.phi_z = mlp(c.latent_dim, c.feature_dim, 1)
        self.phi_prior = nn.Sequential(mlp(c.hidden_dim, c.feature_dim, 1), nn.Linear(c.feature_dim, 2 * c.latent_dim))
        self.phi_dec = mlp(c.feature_dim + c.hidden_dim, c.feature_dim, 1)
        self.head = build_head(c.output, c.feature_dim, frame_dim, c.components)
        self.cell = nn.LSTMCell(2 * c.feature_dim, c.hidden_dim)
        self.proposal = None if c.bootstrap else MixtureDensityLSTM(
            frame_dim + c.latent_dim, c.latent_dim, c.proposal_hidden_dim, c.proposal_components,
            context_dim=c.hidden_dim)

    def _initial_particles(self, batch: int, particles: int, like: torch.Tensor) -> ParticleState:
        hidden = like.new_zeros(batch, particles, self.config.hidden_dim)
        state = {"h": hidden, "c": hidden, "z": like.new_zeros(batch, particles, self.config.latent_dim)}
        if self.proposal is not None:
            state.update(self.proposal.initial_state(batch, particles, like))
        return state

    def _propose(self, state: ParticleState, x: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor):
        """q(z_t | x_{1:t}, z_{1:t-1}) and the proposal's new state; the model's quantities enter detached, so the
        proposal's loss never moves the model."""
        if self.proposal is None:
            return None, {}
        loc, scale = ((mu_p.detach(), (0.5 * logvar_p.detach()).exp()) if self.config.residual_proposal
                      else (None, None))
        return self.proposal(state, torch.cat([x, state["z"]], -1), context=state["h"].detach(), loc=loc, scale=scale)

    def _step(self, state: ParticleState, x: torch.Tensor, features_x: torch.Tensor):
        """One SMC step of the LV-RNN for (B, D) frame x_t and its (B, F) features, over (B, P) particles."""
        particles = state["h"].size(1)
        x = x.unsqueeze(1).expand(-1, particles, -1)
        features_x = features_x.unsqueeze(1).expand(-1, particles, -1)
        h, c = state["h"], state["c"]
        mu_p, logvar_p = self.prior_parameters(h)
        prior = diagonal_gaussian(mu_p, logvar_p)
        q, proposal_state = self._propose(state, x, mu_p, logvar_p)
        z = (prior if q is None else q).sample()  # no gradient: the samples are constants of both updates
        features_z = self.phi_z(z)
        log_px = self.head.log_prob(self.phi_dec(torch.cat([features_z, h], -1)), x)
        log_prior = prior.log_prob(z)
        log_q = log_prior.detach() if q is None else q.log_prob(z)
        inputs = torch.cat([features_x, features_z], -1)
        h, c = self.cell(inputs.reshape(-1, inputs.size(-1)), (h.reshape(-1, h.size(-1)), c.reshape(-1, c.size(-1))))
        new_state = {"h": h.view_as(state["h"]), "c": c.view_as(state["c"]), "z": z, **proposal_state}
        return new_state, log_prior + log_px, log_q

    def sweep(self, frames: torch.Tensor, lengths: torch.Tensor, particles: int | None = None) -> SMCResult:
        """One SMC sweep over (B, T, D) frames with `particles` particles per sequence (default: the config's)."""
        particles = particles or self.config.particles
        features_x = self.phi_x(frames)
        state = self._initial_particles(frames.size(0), particles, frames)
        return smc(lambda s, t: self._step(s, frames[:, t], features_x[:, t]), state,
                   step_mask(lengths, frames.size(1)), particles, self.config.ess_threshold, self.config.resampling)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        """loss = mean over sequences of -log p^(x) + the proposal's inclusive-KL surrogate; kl_weight has no KL
        term to weigh. Totals: recon = -log p^(x) summed, kl = 0, and ess = each sequence's mean ESS summed."""
        frames, lengths = batch["frames"], batch["lengths"]
        mask = step_mask(lengths, frames.size(1))
        result = self.sweep(frames, lengths)
        nll = -result.log_marginal
        loss = nll.mean() + (result.proposal_loss.mean() if self.proposal is not None else 0.0)
        mean_ess = (result.ess * mask).sum(1) / mask.sum(1).clamp(min=1)
        return ModelOutput(loss, {"recon": nll.sum().detach(), "kl": frames.new_zeros(()),
                                  "sequences": torch.tensor(float(frames.size(0))), "steps": mask.sum(),
                                  "ess": mean_ess.sum()})

    @torch.no_grad()
    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        """(num_samples, B) log p^(x) of independent SMC sweeps: each exp is unbiased for p(x), so their
        log-mean-exp is a bound on log p(x) that tightens with num_samples."""
        frames, lengths = batch["frames"], batch["lengths"]
        result = self.sweep(frames.repeat(num_samples, 1, 1), lengths.repeat(num_samples))
        return result.log_marginal.view(num_samples, frames.size(0))

    def prior_parameters(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_parameters(self.phi_prior(h))

    @torch.no_grad()
    def sample_prior(self, num: int, steps: int = 100) -> torch.Tensor:
        """(num, steps, D) frames generated ancestrally from the transition and emission."""
        return ancestral_frames(self, num, steps)


__all__ = ["MixtureDensityLSTM", "NASMC", "NASMCConfig", "SMCResult", "draw_ancestors", "effective_sample_size",
           "gaussian_mixture", "markov_step", "select_particles", "smc"]
