"""Conditional normalizing flows for the transition functions of the deep state-space model (seqlvm.models.dssm).

Each flow is a bijection x -> y of R^d for every fixed condition h (the previous state h_{t-1}), with its
log |det dy/dx| in O(d) (Schmidt & Hofmann 2018, Section 2.4). Conditions (..., d) broadcast against inputs
(K, ..., d), so K particles from one state share one evaluation of the conditioning networks.

    TRIL  y = g(h) + G(h) x, G(h) lower-triangular, its diagonal clipped away from [-delta, delta]   (Eq. 10)
    DIAG  the same with a diagonal G(h)
    ID    y = h + x: additive Gaussian noise, the "generative model without flow" of Section 2.3
    NVPk  a conditional Real NVP coupling layer (Dinh et al. 2016): the first k coordinates pass unchanged and
          condition, with h, an affine map of the others (two hidden layers of 8); the output is then reversed
          so that stacked layers transform every coordinate

Stacks compose independently parametrized layers: F = F_n o ... o F_1, so log-determinants add. A stack is
written like "2xtril", "tril,diag" or "realnvp" (the paper's REAL-NVP-[2..d-1]: nvp2, nvp3, ..., nvp{d-1}).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from pipelines.errors import SeqlvmError

COUPLING_HIDDEN = 8  # "two internal hidden layers of size 8 each" (Section 5.2)
LAYER_PATTERN = re.compile(r"^(?:(\d+)x)?(tril|diag|id|realnvp|nvp\d+)$")


def conditioner(in_dim: int, hidden: int, out_dim: int, layers: int = 1) -> nn.Sequential:
    """An MLP with `layers` tanh hidden layers whose last layer starts at zero: TRIL and DIAG start as y = x and
    a coupling layer as a reversal, so training begins with white noise driving the states."""
    modules, width = [], in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.Tanh()]
        width = hidden
    last = nn.Linear(width, out_dim)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*modules, last)


def clip_away_from_zero(values: torch.Tensor, delta: float) -> torch.Tensor:
    """Map entries in (-delta, delta) to the nearer of -delta, delta, keeping G(h) invertible (Section 2.4)."""
    sign = torch.where(values < 0, -1.0, 1.0).to(values.dtype)
    return torch.where(values.abs() < delta, sign * delta, values)


class AffineFlow(nn.Module):
    """TRIL (Eq. 10) or, with `diagonal`, DIAG: y = g(h) + G(h) x."""

    def __init__(self, dim: int, hidden: int, delta: float, diagonal: bool = False):
        super().__init__()
        self.dim, self.delta, self.diagonal = dim, delta, diagonal
        rows, cols = torch.tril_indices(dim, dim, offset=-1)
        self.register_buffer("below_rows", rows, persistent=False)
        self.register_buffer("below_cols", cols, persistent=False)
        self.shift = conditioner(dim, hidden, dim)
        self.scale = conditioner(dim, hidden, dim if diagonal else dim + rows.numel())

    def _parameters_of(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """g(h), the clipped diagonal of G(h) (starting at 1) and, for TRIL, G(h) itself."""
        raw = self.scale(condition)
        diagonal = clip_away_from_zero(1.0 + raw[..., :self.dim], self.delta)
        if self.diagonal:
            return self.shift(condition), diagonal, None
        matrix = torch.diag_embed(diagonal)
        matrix[..., self.below_rows, self.below_cols] = raw[..., self.dim:]
        return self.shift(condition), diagonal, matrix

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, diagonal, matrix = self._parameters_of(condition)
        scaled = diagonal * x if matrix is None else (matrix @ x.unsqueeze(-1)).squeeze(-1)
        y = shift + scaled
        return y, diagonal.abs().log().sum(-1).expand(y.shape[:-1])

    def inverse(self, y: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, diagonal, matrix = self._parameters_of(condition)
        centred = y - shift
        if matrix is None:
            x = centred / diagonal
        else:  # forward substitution, O(d^2)
            x = torch.linalg.solve_triangular(matrix, centred.unsqueeze(-1), upper=False).squeeze(-1)
        return x, -diagonal.abs().log().sum(-1).expand(x.shape[:-1])


class AdditiveNoise(nn.Module):
    """ID: h_t = h_{t-1} + xi_t, the Jacobian is the identity."""

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + condition, x.new_zeros(x.shape[:-1])

    def inverse(self, y: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return y - condition, y.new_zeros(y.shape[:-1])


class ConditionalCoupling(nn.Module):
    """Real NVP coupling conditioned on h: y_{1:k} = x_{1:k}, y_{k+1:d} = x_{k+1:d} * exp(s) + t with
    (s, t) = NN(x_{1:k}, h); the result is reversed. tanh bounds s so one layer scales by at most e."""

    def __init__(self, dim: int, kept: int):
        super().__init__()
        self.kept = kept
        self.net = conditioner(kept + dim, COUPLING_HIDDEN, 2 * (dim - kept), layers=2)

    def _scale_and_shift(self, kept: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        condition = condition.expand(*kept.shape[:-1], condition.size(-1))
        log_scale, shift = self.net(torch.cat([kept, condition], -1)).chunk(2, dim=-1)
        return torch.tanh(log_scale), shift

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, changed = x[..., :self.kept], x[..., self.kept:]
        log_scale, shift = self._scale_and_shift(kept, condition)
        y = torch.cat([kept, changed * log_scale.exp() + shift], -1)
        return y.flip(-1), log_scale.sum(-1)

    def inverse(self, y: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.flip(-1)
        kept, changed = y[..., :self.kept], y[..., self.kept:]
        log_scale, shift = self._scale_and_shift(kept, condition)
        return torch.cat([kept, (changed - shift) * (-log_scale).exp()], -1), -log_scale.sum(-1)


class FlowStack(nn.Module):
    """F = F_n o ... o F_1, every layer conditioned on the same h."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, log |det dy/dx|)."""
        log_det = x.new_zeros(x.shape[:-1])
        for layer in self.layers:
            x, layer_log_det = layer(x, condition)
            log_det = log_det + layer_log_det
        return x, log_det

    def inverse(self, y: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, log |det dx/dy|) with x the preimage of y."""
        log_det = y.new_zeros(y.shape[:-1])
        for layer in reversed(self.layers):
            y, layer_log_det = layer.inverse(y, condition)
            log_det = log_det + layer_log_det
        return y, log_det


def parse_flow(spec: str, dim: int) -> list[str]:
    """A stack spec ("2xtril", "tril,diag", "realnvp", "nvp3,nvp5") -> its layer names, or a one-line error."""
    names: list[str] = []
    for item in spec.lower().replace(" ", "").split(","):
        match = LAYER_PATTERN.match(item)
        if not match:
            raise SeqlvmError(f"flow {spec!r}: {item!r} is not a layer (tril, diag, id, nvpK, realnvp, "
                              "optionally repeated as 2xtril)")
        repeat, name = int(match.group(1) or 1), match.group(2)
        if repeat < 1:
            raise SeqlvmError(f"flow {spec!r}: a layer must be repeated at least once")
        layer_names = [f"nvp{k}" for k in range(2, dim)] if name == "realnvp" else [name]
        if not layer_names:
            raise SeqlvmError(f"flow {spec!r}: realnvp needs a state of at least 3 dimensions")
        for layer in layer_names:
            if layer.startswith("nvp") and not 1 <= int(layer[3:]) < dim:
                raise SeqlvmError(f"flow {spec!r}: {layer} must keep between 1 and {dim - 1} of the "
                                  f"{dim} state coordinates")
        names += layer_names * repeat
    return names


def build_flow(spec: str, dim: int, hidden: int, delta: float) -> FlowStack:
    def layer(name: str) -> nn.Module:
        if name in ("tril", "diag"):
            return AffineFlow(dim, hidden, delta, diagonal=name == "diag")
        if name == "id":
            return AdditiveNoise()
        return ConditionalCoupling(dim, int(name[3:]))

    return FlowStack([layer(name) for name in parse_flow(spec, dim)])


__all__ = ["AdditiveNoise", "AffineFlow", "ConditionalCoupling", "FlowStack", "build_flow", "clip_away_from_zero",
           "parse_flow"]
