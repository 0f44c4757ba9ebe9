"""Pieces of the variational objective shared by the models: KL terms, annealing schedules, word dropout."""
from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over the last dimension."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_kl_between(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                        logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) for diagonal Gaussians, summed over the last
    dimension: the per-step KL against a learned conditional prior (VRNN, SRNN)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def log_normal(x: torch.Tensor, mu: torch.Tensor | float = 0.0, logvar: torch.Tensor | float = 0.0) -> torch.Tensor:
    """log N(x; mu, exp(logvar)), summed over the last dimension."""
    logvar = torch.as_tensor(logvar, dtype=x.dtype, device=x.device)
    return (-0.5 * (LOG_2PI + logvar + (x - mu).pow(2) / logvar.exp())).sum(-1)


def kl_weight(step: int, schedule: str, *, rate: float = 0.0025, midpoint: int = 2500,
              warmup_steps: int = 2000, ceiling: float = 1.0, cycle_steps: int = 1000,
              cycle_rise: float = 0.5) -> float:
    """The KL term's weight at a (1-based) training step.

    sigmoid: ceiling / (1 + exp(-rate * (step - midpoint))), the logistic curve of Bowman et al., Figure 2;
    linear:  rises from 0 to the ceiling over `warmup_steps` (Kruengkrai 2019 warms up over 10 epochs);
    cyclical: repeats every `cycle_steps`: rises linearly from 0 over the first `cycle_rise` share of the
             cycle, then holds the ceiling (Fu et al. 2019); each restart lets the encoder learn again
             what the decoder ignored while the KL cost was high;
    constant: the ceiling throughout.
    """
    if schedule == "constant":
        return ceiling
    if schedule == "linear":
        return ceiling * min(1.0, step / max(1, warmup_steps))
    if schedule == "cyclical":
        position = ((step - 1) % cycle_steps + 1) / cycle_steps
        return ceiling * min(1.0, position / cycle_rise)
    if schedule == "sigmoid":
        # exp() of a large argument overflows: clip it, the weight is 0 to double precision there anyway.
        return ceiling / (1.0 + math.exp(min(700.0, -rate * (step - midpoint))))
    raise ValueError(f"unknown KL annealing schedule {schedule!r}")


def word_dropout(tokens: torch.Tensor, keep_rate: float, unk_id: int, protected: torch.Tensor) -> torch.Tensor:
    """Replace each conditioned-on token by <unk> with probability 1 - keep_rate (Bowman et al. §3.1).

    `protected` marks positions left untouched (the <s> that starts decoding and padding).
    keep_rate 0 gives the inputless decoder; 1 leaves the input as is.
    """
    if keep_rate >= 1.0:
        return tokens
    drop = torch.rand(tokens.shape, device=tokens.device) >= keep_rate
    return torch.where(drop & ~protected, torch.full_like(tokens, unk_id), tokens)
