"""The RNN baseline of the frame models (Chung et al.'s RNN-Gauss / RNN-GMM; the RNN of the music tables):
an LSTM over the previous frames, h_t = LSTM(phi_x(x_{t-1}), h_{t-1}), and p(x_t | x_<t) from phi_dec(h_t).
No latent: the log-likelihood is exact. Batches as for the VRNN: `frames` (B, T, D) and `lengths`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqlvm.models.base import FrameModel, ModelOutput, frame_totals, step_mask
from seqlvm.models.fields import size
from seqlvm.models.heads import build_head, check_output, mlp


@dataclass
class FrameRNNConfig:
    hidden_dim: int = size(256)
    feature_dim: int = size(128)
    feature_layers: int = size(1)
    output: str = "gauss"  # gauss | gmm | bernoulli | strokes (default: what the data's manifest names)
    components: int = size(20)

    def validate(self) -> None:
        check_output(self.output)


class FrameRNN(FrameModel):
    """LSTM over frames with a Gaussian, GMM, Bernoulli or pen-stroke output: the baseline of VRNN and SRNN."""

    name = "rnn"
    config_class = FrameRNNConfig
    has_latent = False

    def __init__(self, config: FrameRNNConfig, frame_dim: int):
        super().__init__(config, frame_dim)
        self.phi_x = mlp(frame_dim, config.feature_dim, config.feature_layers)
        self.rnn = nn.LSTM(config.feature_dim, config.hidden_dim, batch_first=True)
        self.phi_dec = mlp(config.hidden_dim, config.feature_dim, config.feature_layers)
        self.head = build_head(config.output, config.feature_dim, frame_dim, config.components)

    def step_log_probs(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T) log p(x_t | x_<t), the first frame predicted from a zero input."""
        previous = torch.cat([torch.zeros_like(frames[:, :1]), frames[:, :-1]], dim=1)
        states = self.rnn(self.phi_x(previous))[0]
        return self.head.log_prob(self.phi_dec(states), frames)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        log_px = self.step_log_probs(batch["frames"])
        mask = step_mask(batch["lengths"], batch["frames"].size(1))
        return frame_totals(log_px, torch.zeros_like(log_px), mask, kl_weight)

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        mask = step_mask(batch["lengths"], batch["frames"].size(1))
        return (self.step_log_probs(batch["frames"]) * mask).sum(1).unsqueeze(0)

    @torch.no_grad()
    def sample_prior(self, num: int, steps: int = 100) -> torch.Tensor:
        state, frames = None, []
        x = self.rnn.weight_hh_l0.new_zeros(num, 1, self.frame_dim)
        for _ in range(steps):
            out, state = self.rnn(self.phi_x(x), state)
            x = self.head.sample(self.phi_dec(out))
            frames.append(x)
        return torch.cat(frames, 1)
