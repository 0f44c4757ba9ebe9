"""Output distributions for continuous and binary frames, shared by the RNN, VRNN and SRNN families:
diagonal Gaussian (speech), a mixture of diagonal Gaussians (GMM, 20 components in Chung et al.), and
independent Bernoullis (piano rolls), and for pen strokes a mixture of bivariate Gaussians over the offsets with
a Bernoulli pen-up bit (Graves, 2013). A head maps features (..., in_dim) to a distribution over
frames (..., frame_dim); `log_prob` sums over the frame's dimensions."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pipelines.errors import SeqlvmError
from seqlvm.objectives import LOG_2PI

MIN_LOGVAR, MAX_LOGVAR = -10.0, 10.0  # keeps exp(logvar) finite early in training


def gaussian_parameters(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log-variance) from a network's output of twice the size, the log-variance kept in a range where
    its exp and the KL terms stay finite (an unbounded one overflows early in training, when the KL weight
    is near zero and nothing holds the posterior variance)."""
    mean, logvar = params.chunk(2, dim=-1)
    return mean, logvar.clamp(MIN_LOGVAR, MAX_LOGVAR)


class GaussianHead(nn.Module):
    def __init__(self, in_dim: int, frame_dim: int):
        super().__init__()
        self.params = nn.Linear(in_dim, 2 * frame_dim)

    def _split(self, features):
        return gaussian_parameters(self.params(features))

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


class StrokeHead(nn.Module):
    """Frames (dx, dy, pen_up): a mixture of `components` bivariate Gaussians with correlation rho for the
    offsets, and a Bernoulli for the pen lifting after the point."""

    def __init__(self, in_dim: int, components: int = 20):
        super().__init__()
        self.components = components
        self.params = nn.Linear(in_dim, 6 * components + 1)

    def _split(self, features):
        out = self.params(features)
        logits, mean_x, mean_y, log_sx, log_sy, rho = out[..., :-1].chunk(6, dim=-1)
        log_sx, log_sy = (s.clamp(MIN_LOGVAR / 2, MAX_LOGVAR / 2) for s in (log_sx, log_sy))
        # tanh keeps |rho| < 1; the margin keeps log(1 - rho^2) finite in float32.
        return F.log_softmax(logits, -1), mean_x, mean_y, log_sx, log_sy, torch.tanh(rho) * 0.999, out[..., -1]

    def log_prob(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_w, mean_x, mean_y, log_sx, log_sy, rho, pen_logit = self._split(features)
        zx = (x[..., :1] - mean_x) / log_sx.exp()
        zy = (x[..., 1:2] - mean_y) / log_sy.exp()
        one_minus_rho2 = 1 - rho.pow(2)
        log_normal2 = (-LOG_2PI - log_sx - log_sy - 0.5 * one_minus_rho2.log()
                       - (zx.pow(2) + zy.pow(2) - 2 * rho * zx * zy) / (2 * one_minus_rho2))
        log_pen = -F.binary_cross_entropy_with_logits(pen_logit, x[..., 2], reduction="none")
        return torch.logsumexp(log_w + log_normal2, dim=-1) + log_pen

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        log_w, mean_x, mean_y, log_sx, log_sy, rho, pen_logit = self._split(features)
        pick = torch.distributions.Categorical(logits=log_w).sample().unsqueeze(-1)
        mx, my, sx, sy, r = (t.gather(-1, pick).squeeze(-1) for t in (mean_x, mean_y, log_sx.exp(),
                                                                       log_sy.exp(), rho))
        e1, e2 = torch.randn_like(mx), torch.randn_like(mx)
        dx = mx + sx * e1
        dy = my + sy * (r * e1 + (1 - r.pow(2)).sqrt() * e2)
        return torch.stack([dx, dy, torch.bernoulli(torch.sigmoid(pen_logit))], dim=-1)


OUTPUTS = ("gauss", "gmm", "bernoulli", "strokes")


def check_output(kind: str) -> None:
    """The config check every frame model makes of its `output`."""
    if kind not in OUTPUTS:
        raise SeqlvmError(f"model.output must be one of {', '.join(OUTPUTS)}, not {kind!r}")


def build_head(kind: str, in_dim: int, frame_dim: int, components: int = 20) -> nn.Module:
    check_output(kind)
    if kind == "strokes":
        if frame_dim != 3:
            raise SeqlvmError(f"model.output strokes needs (dx, dy, pen_up) frames, not {frame_dim}-dimensional ones")
        return StrokeHead(in_dim, components)
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


__all__ = ["BernoulliHead", "GMMHead", "GaussianHead", "OUTPUTS", "StrokeHead", "build_head", "gaussian_parameters",
           "mlp"]
