"""VRNN (Chung et al. 2015): a latent variable z_t at every step of an LSTM over continuous or binary frames.

    prior      p(z_t | h_{t-1})        = N(mu_0, sigma_0)   from phi_prior(h_{t-1})         (Eq. 5; VRNN-I: N(0, I))
    generation p(x_t | z_t, h_{t-1})   from phi_dec([phi_z(z_t), h_{t-1}])                  (Eq. 6)
    recurrence h_t = LSTM([phi_x(x_t), phi_z(z_t)], h_{t-1})                                (Eq. 7)
    inference  q(z_t | x_t, h_{t-1})   = N(mu_z, sigma_z)   from phi_enc([phi_x(x_t), h_{t-1}]) (Eq. 9)

The ELBO sums, over steps, log p(x_t | ...) - KL(q(z_t) || p(z_t)) (Eq. 10). Batches hold `frames` (B, T, D)
and `lengths` (B,); padded steps add nothing. Output distributions: gauss, gmm (VRNN-Gauss, VRNN-GMM),
bernoulli (piano rolls) or strokes (pen offsets and lifts). `conditional_prior: false` gives VRNN-I (STORN-like).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqlvm.models.base import FrameModel, ModelOutput, frame_totals, step_mask
from seqlvm.models.fields import size
from seqlvm.models.heads import build_head, check_output, gaussian_parameters, mlp
from seqlvm.models.latent_rnn import ancestral_frames
from seqlvm.objectives import gaussian_kl_between, log_normal


@dataclass
class VRNNConfig:
    # The papers use 2000 LSTM units and 600-unit, 4-layer feature extractors for speech (1 layer for
    # handwriting); these defaults are sized for a CPU.
    hidden_dim: int = size(256)
    latent_dim: int = size(16)
    feature_dim: int = size(128)
    feature_layers: int = size(1)
    output: str = "gauss"  # gauss | gmm | bernoulli | strokes (default: what the data's manifest names)
    components: int = size(20)  # GMM components
    conditional_prior: bool = True  # false: VRNN-I, z_t ~ N(0, I)

    def validate(self) -> None:
        check_output(self.output)


class VRNN(FrameModel):
    """Variational RNN (Chung et al. 2015): VRNN-Gauss, VRNN-GMM, VRNN-I; Bernoulli and pen-stroke outputs too."""

    name = "vrnn"
    config_class = VRNNConfig

    def __init__(self, config: VRNNConfig, frame_dim: int):
        super().__init__(config, frame_dim)
        c = config
        self.phi_x = mlp(frame_dim, c.feature_dim, c.feature_layers)
        self.phi_z = mlp(c.latent_dim, c.feature_dim, c.feature_layers)
        self.phi_prior = nn.Sequential(mlp(c.hidden_dim, c.feature_dim, c.feature_layers),
                                       nn.Linear(c.feature_dim, 2 * c.latent_dim))
        self.phi_enc = nn.Sequential(mlp(c.feature_dim + c.hidden_dim, c.feature_dim, c.feature_layers),
                                     nn.Linear(c.feature_dim, 2 * c.latent_dim))
        self.phi_dec = mlp(c.feature_dim + c.hidden_dim, c.feature_dim, c.feature_layers)
        self.head = build_head(c.output, c.feature_dim, frame_dim, c.components)
        self.cell = nn.LSTMCell(2 * c.feature_dim, c.hidden_dim)

    def prior_parameters(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.config.conditional_prior:
            zeros = h.new_zeros(h.size(0), self.config.latent_dim)
            return zeros, zeros
        return gaussian_parameters(self.phi_prior(h))

    def step_terms(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the model over (B, T, D) frames with z_t ~ q. Returns per-step (B, T) log p(x_t | ...), the
        analytic KL(q || prior), and log p(z_t) - log q(z_t) of the sampled z (for importance weights)."""
        batch, steps, _ = frames.shape
        h = frames.new_zeros(batch, self.config.hidden_dim)
        c = torch.zeros_like(h)
        log_px, kl, log_ratio = [], [], []
        for t in range(steps):
            features_x = self.phi_x(frames[:, t])
            mu_p, logvar_p = self.prior_parameters(h)
            mu_q, logvar_q = gaussian_parameters(self.phi_enc(torch.cat([features_x, h], -1)))
            z = mu_q + (0.5 * logvar_q).exp() * torch.randn_like(mu_q)
            features_z = self.phi_z(z)
            log_px.append(self.head.log_prob(self.phi_dec(torch.cat([features_z, h], -1)), frames[:, t]))
            kl.append(gaussian_kl_between(mu_q, logvar_q, mu_p, logvar_p))
            log_ratio.append(log_normal(z, mu_p, logvar_p) - log_normal(z, mu_q, logvar_q))
            h, c = self.cell(torch.cat([features_x, features_z], -1), (h, c))
        return torch.stack(log_px, 1), torch.stack(kl, 1), torch.stack(log_ratio, 1)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        frames, lengths = batch["frames"], batch["lengths"]
        mask = step_mask(lengths, frames.size(1))
        log_px, kl, _ = self.step_terms(frames)
        return frame_totals(log_px, kl, mask, kl_weight)

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        frames, lengths = batch["frames"], batch["lengths"]
        repeated = frames.repeat(num_samples, 1, 1)
        mask = step_mask(lengths, frames.size(1)).repeat(num_samples, 1)
        log_px, _, log_ratio = self.step_terms(repeated)
        return ((log_px + log_ratio) * mask).sum(1).view(num_samples, frames.size(0))

    @torch.no_grad()
    def sample_prior(self, num: int, steps: int = 100) -> torch.Tensor:
        """(num, steps, D) frames generated ancestrally from the (conditional) prior."""
        return ancestral_frames(self, num, steps)
