"""The generative network shared by the VRNN and NASMC's LV-RNN, an LSTM whose input at each step is the frame and
its latent: z_t ~ p(z_t | h_{t-1}), x_t ~ p(x_t | z_t, h_{t-1}), h_t = LSTM([phi_x(x_t), phi_z(z_t)], h_{t-1})."""
from __future__ import annotations

import torch
from torch import nn


def ancestral_frames(model: nn.Module, num: int, steps: int) -> torch.Tensor:
    """(num, steps, D) frames from such a model: z_t from its `prior_parameters(h)`, x_t from its head fed by
    `phi_dec([phi_z(z_t), h])`, then the recurrence of its LSTM `cell`."""
    h = model.cell.weight_hh.new_zeros(num, model.config.hidden_dim)
    c = torch.zeros_like(h)
    frames = []
    for _ in range(steps):
        mu_p, logvar_p = model.prior_parameters(h)
        z = mu_p + (0.5 * logvar_p).exp() * torch.randn_like(mu_p)
        features_z = model.phi_z(z)
        x = model.head.sample(model.phi_dec(torch.cat([features_z, h], -1)))
        frames.append(x)
        h, c = model.cell(torch.cat([model.phi_x(x), features_z], -1), (h, c))
    return torch.stack(frames, 1)
