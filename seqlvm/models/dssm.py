"""Deep state-space model (DSSM) for unconditional word generation (Schmidt & Hofmann, NeurIPS 2018).

A word is a character sequence w_1..w_T (its last symbol </s>). The generative model has no autoregressive
feedback: white noise drives a deterministic transition, and each state emits one character,

    h_t = F_g(h_{t-1}, xi_t),   xi_t ~ r = N(0, I)                                          (Eq. 1)
    P(w_t | h_t) = softmax(W h_t + b),   P(w) = int prod_t p(h_t | h_{t-1}) P(w_t | h_t) dh  (Eq. 2)

with h_0 learned and F_g a conditional flow (seqlvm.models.flows: TRIL of Eq. 10, DIAG, ID, Real NVP).
The inference model factorises as q(h | w) = prod_t q(h_t | h_{t-1}, w_{t:T}) (Eq. 3): a GRU reads the
embedded characters right to left, its state a_t has digested w_{t:T}, and

    xi_t ~ q(xi_t | a_t) = N(mu, diag sigma^2),   h_t = F_q(h_{t-1}, xi_t)                     (Section 2.5)

(q sees h_{t-1} only through F_q, which the paper found more stable; `posterior_sees_state` also feeds it
h_{t-1}). Two-flow ELBO: with zeta_t = s(xi_t) = F_g^{-1}(h_{t-1}, F_q(h_{t-1}, xi_t)),

    L_t = E_q[ log P(w_t | h_t) + log r(zeta_t) - log q(xi_t | a_t)
               + log |det J_{F_q}(xi_t)| - log |det J_{F_g}(zeta_t)| ]                          (Eq. 8, 9)

With one shared flow F_g = F_q, s = id and the Jacobians cancel: L_t = E_q[log P(w_t|h_t) + log r(xi_t) -
log q(xi_t)] (the special case of Section 2.3); `shared_flow` computes this form directly.

Importance weighting (Section 2.7, Algorithm 1, Appendix A) with K = `importance_samples`: at every step K
peeks h_g^(k) = F_g(h_{t-1}, eps_k), eps_k ~ r, each condition a proposal q_k(xi | a_t, h_g^(k)) that draws
xi^(k) and h^(k) = F_q(h_{t-1}, xi^(k)); the weights omega_k are the integrand of Eq. 9 (log P(w_t | h^(k)) plus
the log density ratio), the step's bound is log (1/K) sum_k omega_k (Eq. 11 with a horizon of one step), and
one h^(k), drawn in proportion to omega_k, is carried to step t+1. K = 1 is the plain sequential ELBO. The
product over steps of (1/K) sum_k omega_k is an unbiased estimate of P(w) for every K (the identity behind
particle filters: E[(1/K) sum_k omega_k f(h^(J))] = int P(w_t|h) p(h|h_{t-1}) f(h) dh when J ~ omega), so
independent runs of the same filter are the importance samples of `log_importance_weights`. Training
maximises the bound with the KL weight beta scaling the log density ratio inside each weight (K = 1:
recon + beta * kl); the reported "recon" is -log P(w_t | h^(k)) averaged under the normalised weights and
"kl" the rest of the bound.

Evaluation of the word distribution (Section 4): P-hat(w) by that estimator or by prior sampling
(Eq. 12, `log_marginal(..., proposal="prior")`); the per-step mutual information between noise and character
I(t) = E_{h_{t-1}}[H[w_t | h_{t-1}] - H[w_t | xi_t, h_{t-1}]] (Eq. 13) by Monte Carlo (`mutual_information`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.errors import SeqlvmError
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID
from seqlvm.models.base import ModelOutput, TextModel, step_mask
from seqlvm.models.fields import Range, bounded, size
from seqlvm.models.flows import FlowStack, build_flow, parse_flow
from seqlvm.models.heads import gaussian_parameters
from seqlvm.objectives import log_normal


@dataclass
class DSSMConfig:
    # Defaults: the paper's d = 8 TRIL model trained on the plain ELBO (Table 1, first row). The paper leaves
    # the embedding, inference-GRU and flow-MLP sizes and the clip delta open (0 < delta < 0.5): ours.
    state_dim: int = size(8)
    embedding_dim: int = size(8)
    inference_dim: int = size(32)  # the backward GRU's state a_t
    flow_hidden: int = size(32)  # hidden units of the MLPs g(h), G(h) of TRIL/DIAG and of the posterior network
    generative_flow: str = "tril"  # F_g: a stack like "tril", "2xtril", "tril,diag", "id", "realnvp", "nvp3"
    inference_flow: str = "tril"  # F_q
    shared_flow: bool = False  # F_q = F_g (one set of weights; the single-flow ELBO)
    importance_samples: int = size(1)  # K of Algorithm 1; 1 is the plain ELBO
    # delta: diagonal entries of G(h) are kept out of (-delta, delta)
    diagonal_clip: float = bounded(0.1, Range(0.0, 0.5, low_open=True, high_open=True))
    posterior_sees_state: bool = False  # condition q(xi_t | ...) on h_{t-1} as well as on a_t

    def validate(self) -> None:
        if self.shared_flow and self.inference_flow.lower() != self.generative_flow.lower():
            raise SeqlvmError("model.shared_flow uses one flow for both models: set inference_flow equal to "
                              f"generative_flow ({self.generative_flow!r}), not {self.inference_flow!r}")
        for name in ("generative_flow", "inference_flow"):
            try:
                parse_flow(getattr(self, name), self.state_dim)
            except SeqlvmError as exc:
                raise SeqlvmError(f"model.{name}: {exc}") from None


class StepTerms(NamedTuple):
    state: torch.Tensor  # (B, d) h_t carried on to the next step
    log_marginal: torch.Tensor  # (B,) log (1/K) sum_k omega_k
    objective: torch.Tensor  # (B,) the same with the density ratio scaled by the KL weight
    recon: torch.Tensor  # (B,) -log P(w_t | h^(k)) averaged under the normalised weights


class SequenceTerms(NamedTuple):
    log_marginal: torch.Tensor  # (B,) sum_t log (1/K) sum_k omega_k: the bound on log P(w)
    objective: torch.Tensor  # (B,) what training maximises (the bound, its KL part weighted)
    recon: torch.Tensor  # (B,) the reconstruction part of -log_marginal


def reverse_within_length(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` entries along dim 1, leaving the padding after them in place."""
    steps = torch.arange(values.size(1), device=values.device)[None, :]
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, index)


def two_flow_transition(generative: FlowStack, inference: FlowStack, previous: torch.Tensor,
                        noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = F_q(h_{t-1}, xi_t) and log r(s(xi_t)) + log |det J_s(xi_t)|, i.e. log p(h_t | h_{t-1}) +
    log |det J_{F_q}(xi_t)| with s = F_g^{-1} o F_q (Eq. 8-9)."""
    state, log_det_inference = inference(noise, previous)
    generative_noise, log_det_generative_inverse = generative.inverse(state, previous)
    return state, log_normal(generative_noise) + log_det_inference + log_det_generative_inverse


def single_flow_transition(flow: FlowStack, previous: torch.Tensor,
                           noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same with F_q = F_g: s = id, so the term is the prior density r(xi_t) of the noise."""
    state, _ = flow(noise, previous)
    return state, log_normal(noise)


def carry_one(states: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """(K, B, d) particles and (K, B) log-weights -> (B, d): for each sequence one particle, drawn in proportion
    to its weight (no gradient flows through the choice, only through the chosen state)."""
    if states.size(0) == 1:
        return states[0]
    chosen = torch.multinomial(log_weights.t().softmax(-1), 1)[:, 0]
    return states[chosen, torch.arange(states.size(1), device=states.device)]


def choose_characters(logits: torch.Tensor, greedy: bool, temperature: float) -> torch.Tensor:
    """One symbol per row: the argmax or a sample at `temperature`; never <pad> or <s>."""
    logits = logits.clone()
    logits[..., [PAD_ID, BOS_ID]] = -float("inf")
    if greedy:
        return logits.argmax(-1)
    return torch.distributions.Categorical(logits=logits / temperature).sample()


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    return -(log_probs.exp() * log_probs).sum(-1)


class DSSM(TextModel):
    """Non-autoregressive deep state-space model with flow transitions (Schmidt & Hofmann 2018)."""

    name = "dssm"
    config_class = DSSMConfig
    has_mutual_information = True

    @property
    def particles_per_sample(self) -> int:
        return self.config.importance_samples

    def __init__(self, config: DSSMConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        c = config
        self.initial_state = nn.Parameter(torch.zeros(c.state_dim))
        self.generative_flow = build_flow(c.generative_flow, c.state_dim, c.flow_hidden, c.diagonal_clip)
        self.inference_flow = (self.generative_flow if c.shared_flow else
                               build_flow(c.inference_flow, c.state_dim, c.flow_hidden, c.diagonal_clip))
        self.emission = nn.Linear(c.state_dim, vocab_size)
        self.embedding = nn.Embedding(vocab_size, c.embedding_dim, padding_idx=PAD_ID)
        self.backward_rnn = nn.GRU(c.embedding_dim, c.inference_dim, batch_first=True)
        posterior_inputs = c.inference_dim + c.state_dim * (int(c.posterior_sees_state)
                                                            + int(c.importance_samples > 1))
        self.posterior = nn.Sequential(nn.Linear(posterior_inputs, c.flow_hidden), nn.Tanh(),
                                       nn.Linear(c.flow_hidden, 2 * c.state_dim))

    # Inference model

    def backward_contexts(self, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) characters w_1..w_T -> (B, T, inference_dim) states a_t of a GRU that has read w_{t:T}."""
        reversed_states, _ = self.backward_rnn(self.embedding(reverse_within_length(targets, lengths)))
        return reverse_within_length(reversed_states, lengths)

    def posterior_parameters(self, context: torch.Tensor, previous: torch.Tensor,
                             peek: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = [context] + ([previous] if self.config.posterior_sees_state else []) + \
            ([peek] if peek is not None else [])
        return gaussian_parameters(self.posterior(torch.cat(inputs, -1)))

    def transition(self, previous: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_t, log r(zeta_t) + log |det J_s(xi_t)|) for (K, B, d) posterior noise xi_t and (B, d) h_{t-1} (Eq. 9)."""
        if self.config.shared_flow:
            return single_flow_transition(self.generative_flow, previous, noise)
        return two_flow_transition(self.generative_flow, self.inference_flow, previous, noise)

    def log_emission(self, states: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.emission(states), dim=-1)

    # The importance-weighted filter (Algorithm 1)

    def propose(self, previous: torch.Tensor, context: torch.Tensor,
                target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K particles for (B, d) states h_{t-1}, (B, H) contexts a_t and (B,) characters w_t: their (K, B, d)
        states h^(k), (K, B) log P(w_t | h^(k)) and log p(h^(k) | h_{t-1}) - log q_k(h^(k))."""
        particles = self.config.importance_samples
        previous_k = previous.expand(particles, *previous.shape)
        peek = None
        if particles > 1:  # Algorithm 1: each proposal sees where F_g could go next
            peek, _ = self.generative_flow(torch.randn_like(previous_k), previous)
        mu, logvar = self.posterior_parameters(context.expand(particles, *context.shape), previous_k, peek)
        noise = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        states, log_prior = self.transition(previous, noise)
        log_likelihood = self.log_emission(states).gather(-1, target.expand(particles, -1).unsqueeze(-1))[..., 0]
        return states, log_likelihood, log_prior - log_normal(noise, mu, logvar)

    def step(self, previous: torch.Tensor, context: torch.Tensor, target: torch.Tensor,
             kl_weight: float = 1.0) -> StepTerms:
        """One step of Algorithm 1: propose, weigh, and carry one particle drawn in proportion to its weight."""
        states, log_likelihood, log_ratio = self.propose(previous, context, target)
        log_weights = log_likelihood + log_ratio  # (K, B)
        tempered = log_likelihood + kl_weight * log_ratio
        log_k = math.log(log_weights.size(0))
        recon = -(log_weights.detach().softmax(0) * log_likelihood).sum(0)
        return StepTerms(carry_one(states, tempered.detach()), torch.logsumexp(log_weights, 0) - log_k,
                         torch.logsumexp(tempered, 0) - log_k, recon)

    def sequence_terms(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0, runs: int = 1) -> SequenceTerms:
        """Per-word sums of the step terms, for `runs` independent runs of the filter (rows run-major)."""
        targets, lengths = batch["targets"], batch["lengths"]
        contexts = self.backward_contexts(targets, lengths)
        targets, lengths, contexts = targets.repeat(runs, 1), lengths.repeat(runs), contexts.repeat(runs, 1, 1)
        mask = step_mask(lengths, targets.size(1))
        state = self.initial_state.expand(targets.size(0), -1)
        log_marginal = objective = recon = torch.zeros_like(mask[:, 0])
        for t in range(targets.size(1)):
            step = self.step(state, contexts[:, t], targets[:, t], kl_weight)
            log_marginal = log_marginal + step.log_marginal * mask[:, t]
            objective = objective + step.objective * mask[:, t]
            recon = recon + step.recon * mask[:, t]
            state = step.state
        return SequenceTerms(log_marginal, objective, recon)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        terms = self.sequence_terms(batch, kl_weight)
        # recon + kl is the bound -sum_t log (1/K) sum_k omega_k; with K = 1 kl is log q - log p of the sample.
        kl = -terms.log_marginal - terms.recon
        return ModelOutput(-terms.objective.mean(), {
            "recon": terms.recon.sum().detach(), "kl": kl.sum().detach(),
            "sequences": torch.tensor(float(terms.recon.size(0))), "steps": batch["lengths"].sum().float()})

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        """(num_samples, B) log-estimates of P(w), each an independent run of the K-particle filter."""
        return self.sequence_terms(batch, runs=num_samples).log_marginal.view(num_samples, -1)

    # Generation and the evaluation of Section 4

    def prior_states(self, num: int, steps: int) -> torch.Tensor:
        """(num, steps, d) state trajectories h_1..h_steps driven by white noise through F_g."""
        state = self.initial_state.expand(num, -1)
        states = []
        for _ in range(steps):
            state, _ = self.generative_flow(torch.randn_like(state), state)
            states.append(state)
        return torch.stack(states, 1)

    @torch.no_grad()
    def log_marginal(self, batch: dict[str, torch.Tensor], num_samples: int,
                     proposal: str = "posterior") -> torch.Tensor:
        """(B,) log P-hat(w): the mean of `num_samples` filter estimates, or, with proposal="prior", Eq. 12:
        (1/N) sum_n P(w | h^(n)) over N state trajectories from the prior, shared by the whole batch."""
        if proposal == "posterior":
            log_estimates = self.log_importance_weights(batch, num_samples)
        elif proposal == "prior":
            targets, lengths = batch["targets"], batch["lengths"]
            log_probs = self.log_emission(self.prior_states(num_samples, targets.size(1)))  # (N, T, V)
            steps = torch.arange(targets.size(1), device=targets.device)
            per_step = log_probs[:, steps[None, :], targets]  # (N, B, T)
            log_estimates = (per_step * step_mask(lengths, targets.size(1))).sum(-1)
        else:
            raise ValueError(f"proposal must be 'posterior' or 'prior', not {proposal!r}")
        return torch.logsumexp(log_estimates, 0) - math.log(num_samples)

    @torch.no_grad()
    def sample_prior(self, num: int, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        """(num, <=max_len) character ids: noise -> states -> characters, each row stopping at </s>.
        `greedy` takes the most likely character of each state (the noise still varies the word)."""
        state = self.initial_state.expand(num, -1)
        finished = torch.zeros(num, dtype=torch.bool, device=state.device)
        characters = []
        for _ in range(max_len):
            state, _ = self.generative_flow(torch.randn_like(state), state)
            chosen = choose_characters(self.emission(state), greedy, temperature)
            characters.append(torch.where(finished, torch.full_like(chosen, PAD_ID), chosen))
            finished |= chosen == EOS_ID
            if finished.all():
                break
        return torch.stack(characters, 1)

    @torch.no_grad()
    def mutual_information(self, num_prefixes: int = 1000, num_noise: int = 100, max_len: int = 12) -> torch.Tensor:
        """(max_len,) I(t) in nats (Eq. 13): for `num_prefixes` prior states h_{t-1}, the entropy of the
        character distribution mixed over `num_noise` draws of xi_t, minus the mean entropy given each draw."""
        state = self.initial_state.expand(num_prefixes, -1)
        information = []
        for _ in range(max_len):
            noise = torch.randn(num_noise, *state.shape, device=state.device)
            candidates, _ = self.generative_flow(noise, state)
            log_probs = self.log_emission(candidates)  # (num_noise, num_prefixes, V)
            log_mixture = torch.logsumexp(log_probs, 0) - math.log(num_noise)
            information.append((entropy(log_mixture) - entropy(log_probs).mean(0)).mean())
            state = candidates[0]  # one noise draw continues the prefix: a sample of the prior
        return torch.stack(information)
