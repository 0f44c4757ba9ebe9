"""SRNN (Fraccaro et al. 2016): a deterministic GRU layer interlocked with a stochastic Markov layer.

    deterministic  d_t = GRU(d_{t-1}, x_{t-1})                                  (inputs u_t = x_{t-1}, d_0 = 0)
    prior          p(z_t | z_{t-1}, d_t)       = N(mu_p, v_p)  two-layer networks of [z_{t-1}, d_t]   (Eq. 3)
    emission       p(x_t | z_t, d_t)           through a network of [z_t, d_t]
    inference      a_t = backward GRU over [d_t, x_t] (smoothing) or a network of [d_t, x_t] (filtering)
                   q(z_t | z_{t-1}, a_t)       = N(mu_q, v_q); with Resq, mu_q = mu_p + NN(z_{t-1}, a_t)

The ELBO sums log p(x_t | z_t, d_t) - KL(q(z_t | z_{t-1}, a_t) || p(z_t | z_{t-1}, d_t)) over steps, z_{t-1}
sampled from q. Batches are as for the VRNN: `frames` (B, T, D) and `lengths`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqlvm.models.base import FrameModel, ModelOutput, frame_totals, step_mask
from seqlvm.models.fields import size
from seqlvm.models.heads import build_head, check_output, gaussian_parameters, mlp
from seqlvm.objectives import gaussian_kl_between, log_normal


@dataclass
class SRNNConfig:
    hidden_dim: int = size(256)  # GRU units of d_t and of the backward a_t
    latent_dim: int = size(16)
    feature_dim: int = size(128)  # units of the two-layer networks
    output: str = "gauss"  # gauss | gmm | bernoulli | strokes (default: what the data's manifest names)
    components: int = size(20)
    smoothing: bool = True  # false: filtering, q sees only x_t and d_t
    resq: bool = True  # the posterior mean as a residual on the prior mean

    def validate(self) -> None:
        check_output(self.output)


def gaussian_params(in_dim: int, hidden: int, latent: int) -> nn.Sequential:
    """A two-layer network giving (mean, log-variance) of a diagonal Gaussian, as in the paper."""
    return nn.Sequential(mlp(in_dim, hidden, 2), nn.Linear(hidden, 2 * latent))


class SRNN(FrameModel):
    """Stochastic RNN (Fraccaro et al. 2016): GRU + Markov latent layer, smoothing or filtering, Resq."""

    name = "srnn"
    config_class = SRNNConfig

    def __init__(self, config: SRNNConfig, frame_dim: int):
        super().__init__(config, frame_dim)
        c = config
        self.forward_rnn = nn.GRU(frame_dim, c.hidden_dim, batch_first=True)
        self.prior = gaussian_params(c.latent_dim + c.hidden_dim, c.feature_dim, c.latent_dim)
        self.emission = mlp(c.latent_dim + c.hidden_dim, c.feature_dim, 2)
        self.head = build_head(c.output, c.feature_dim, frame_dim, c.components)
        if c.smoothing:
            self.backward_rnn = nn.GRU(c.hidden_dim + frame_dim, c.hidden_dim, batch_first=True)
        else:
            self.filter = mlp(c.hidden_dim + frame_dim, c.hidden_dim, 1)
        self.posterior = gaussian_params(c.latent_dim + c.hidden_dim, c.feature_dim, c.latent_dim)

    def deterministic_states(self, frames: torch.Tensor) -> torch.Tensor:
        """d_{1:T} from the inputs u_t = x_{t-1} (x_0 = 0)."""
        inputs = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, :-1]], dim=1)
        return self.forward_rnn(inputs)[0]

    def inference_states(self, d: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """a_{1:T}: a GRU run backwards from each sequence's own last step (smoothing), or a network of the
        present step (filtering)."""
        joined = torch.cat([d, frames], -1)
        if not self.config.smoothing:
            return self.filter(joined)
        reversed_joined = reverse_padded(joined, lengths)
        return reverse_padded(self.backward_rnn(reversed_joined)[0], lengths)

    def step_terms(self, frames: torch.Tensor, lengths: torch.Tensor):
        """Per-step (B, T) log p(x_t | z_t, d_t), KL(q || p) and log p(z_t | .) - log q(z_t | .), z ~ q."""
        d = self.deterministic_states(frames)
        a = self.inference_states(d, frames, lengths)
        z = frames.new_zeros(frames.size(0), self.config.latent_dim)
        log_px, kl, log_ratio = [], [], []
        for t in range(frames.size(1)):
            mu_p, logvar_p = gaussian_parameters(self.prior(torch.cat([z, d[:, t]], -1)))
            mu_q, logvar_q = gaussian_parameters(self.posterior(torch.cat([z, a[:, t]], -1)))
            if self.config.resq:
                mu_q = mu_p + mu_q
            z = mu_q + (0.5 * logvar_q).exp() * torch.randn_like(mu_q)
            log_px.append(self.head.log_prob(self.emission(torch.cat([z, d[:, t]], -1)), frames[:, t]))
            kl.append(gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p))
            log_ratio.append(log_normal(z, mu_p, logvar_p) - log_normal(z, mu_q, logvar_q))
        return torch.stack(log_px, 1), torch.stack(kl, 1), torch.stack(log_ratio, 1)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        frames, lengths = batch["frames"], batch["lengths"]
        log_px, kl, _ = self.step_terms(frames, lengths)
        return frame_totals(log_px, kl, step_mask(lengths, frames.size(1)), kl_weight)

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        frames, lengths = batch["frames"], batch["lengths"]
        repeated, repeated_lengths = frames.repeat(num_samples, 1, 1), lengths.repeat(num_samples)
        log_px, _, log_ratio = self.step_terms(repeated, repeated_lengths)
        mask = step_mask(repeated_lengths, frames.size(1))
        return ((log_px + log_ratio) * mask).sum(1).view(num_samples, frames.size(0))

    @torch.no_grad()
    def sample_prior(self, num: int, steps: int = 100) -> torch.Tensor:
        """(num, steps, D) frames generated ancestrally: d_t from the previous frame, z_t from the prior."""
        weight = self.forward_rnn.weight_hh_l0
        h = weight.new_zeros(1, num, self.config.hidden_dim)
        z = weight.new_zeros(num, self.config.latent_dim)
        x = weight.new_zeros(num, 1, self.frame_dim)
        frames = []
        for _ in range(steps):
            d, h = self.forward_rnn(x, h)
            mu_p, logvar_p = gaussian_parameters(self.prior(torch.cat([z, d[:, 0]], -1)))
            z = mu_p + (0.5 * logvar_p).exp() * torch.randn_like(mu_p)
            x = self.head.sample(self.emission(torch.cat([z, d[:, 0]], -1))).unsqueeze(1)
            frames.append(x)
        return torch.cat(frames, 1)


def reverse_padded(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each (B, T, ...) sequence within its own length, leaving the padding where it is."""
    steps = sequences.size(1)
    positions = torch.arange(steps, device=sequences.device)[None, :]
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return sequences.gather(1, index[..., None].expand_as(sequences))
