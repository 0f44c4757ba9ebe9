"""Output distributions for continuous and binary frames, shared by the RNN, VRNN and SRNN families:
diagonal Gaussian (speech), a mixture of diagonal Gaussians (GMM, 20 components in Chung et al.), and
independent Bernoullis (piano rolls, pen-up bits). A head maps features (..., in_dim) to a distribution over
frames (..., frame_dim); `log_prob` sums over the frame's dimensions."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from seqlvm.errors import SeqlvmError
from seqlvm.objectives import LOG_2PI

MIN_LOGVAR, MAX_LOGVAR = -10.0, 10.0  # keeps exp(logvar) finite early in training


class GaussianHead(nn.Module):
    def __init__(self, in_dim: int, frame_dim: int):
        super().__init__()
        self.params = nn.Linear(in_dim, 2 * frame_dim)

    def _split(self, features):
        mean, logvar = self.params(features).chunk(2, dim=-1)
        return mean, logvar.clamp(MIN_LOGVAR, MAX_LOGVAR)

    def log_prob(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, logvar = self._split(features)
        return (-0.5 * (LOG_2PI + logvar + (x - mean).pow(2) / logvar.exp())).sum(-1)

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        mean, logvar = self._split(features)
        return mean + (0.5 * logvar).exp() * torch.randn_like(mean)


class GMMHead(nn.Module):
    def __init__(self, in_dim: int, frame_dim: int, components: int = 20):
        super().__init__()
        self.components, self.frame_dim = components, frame_dim
        self.params = nn.Linear(in_dim, components * (1 + 2 * frame_dim))

    def _split(self, features):
        k, d = self.components, self.frame_dim
        out = self.params(features)
        logits = out[..., :k]
        mean, logvar = out[..., k:].reshape(*out.shape[:-1], k, 2 * d).chunk(2, dim=-1)
        return F.log_softmax(logits, -1), mean, logvar.clamp(MIN_LOGVAR, MAX_LOGVAR)

    def log_prob(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_weights, mean, logvar = self._split(features)
        x = x.unsqueeze(-2)
        per_component = (-0.5 * (LOG_2PI + logvar + (x - mean).pow(2) / logvar.exp())).sum(-1)
        return torch.logsumexp(log_weights + per_component, dim=-1)

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        log_weights, mean, logvar = self._split(features)
        pick = torch.distributions.Categorical(logits=log_weights).sample()
        index = pick[..., None, None].expand(*pick.shape, 1, self.frame_dim)
        mean, logvar = mean.gather(-2, index).squeeze(-2), logvar.gather(-2, index).squeeze(-2)
        return mean + (0.5 * logvar).exp() * torch.randn_like(mean)


class BernoulliHead(nn.Module):
    def __init__(self, in_dim: int, frame_dim: int):
        super().__init__()
        self.logits = nn.Linear(in_dim, frame_dim)

    def log_prob(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(self.logits(features), x, reduction="none").sum(-1)

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(self.logits(features)))


OUTPUTS = ("gauss", "gmm", "bernoulli")


def check_output(kind: str) -> None:
    """The config check every frame model makes of its `output`."""
    if kind not in OUTPUTS:
        raise SeqlvmError(f"model.output must be one of {', '.join(OUTPUTS)}, not {kind!r}")


def build_head(kind: str, in_dim: int, frame_dim: int, components: int = 20) -> nn.Module:
    check_output(kind)
    if kind == "gmm":
        return GMMHead(in_dim, frame_dim, components)
    return (GaussianHead if kind == "gauss" else BernoulliHead)(in_dim, frame_dim)


def mlp(in_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """The papers' feature extractors (phi): `layers` ReLU layers of `hidden` units."""
    modules, width = [], in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*modules)


__all__ = ["BernoulliHead", "GMMHead", "GaussianHead", "OUTPUTS", "build_head", "mlp"]
