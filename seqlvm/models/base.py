"""What every model shares: a config dataclass, construction from (config, vocab size), and a forward pass that
returns the loss plus summed metrics, so training, evaluation and logging never special-case a model."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelOutput:
    loss: torch.Tensor  # scalar to minimise (mean over sentences of recon + kl_weight * kl)
    # Sums over the batch, so workers can all-reduce them: recon, kl, sentences, tokens.
    totals: dict[str, torch.Tensor]


FRAME_MODALITIES = ("audio", "strokes", "midi")


class SequenceModel(nn.Module):
    name: str = ""
    config_class: type = object
    has_latent: bool = True
    modalities: tuple[str, ...] = ("text",)  # the manifest modalities this model reads

    def __init__(self, config, vocab_size: int):
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size

    def constructor_args(self) -> dict:
        """Everything needed to rebuild this model from a checkpoint: plain data, no code."""
        return {"name": self.name, "config": dataclasses.asdict(self.config), "vocab_size": self.vocab_size}

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        raise NotImplementedError

    @property
    def particles_per_sample(self) -> int:
        """Hypotheses one importance sample carries through the model at once (a filter's particles): what an
        importance sample costs in memory, relative to one latent trajectory."""
        return 1

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        """(num_samples, batch) log p(x, z) - log q(z | x) with z ~ q(z | x); exact log p(x) without a latent."""
        raise NotImplementedError


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) float mask of a batch of frame sequences: 1 for real steps, 0 for padding."""
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).float()


def frame_totals(log_px: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_weight: float) -> ModelOutput:
    """The output of a per-step latent model from (B, T) log p(x_t | ...) and KL terms. The text models' total
    keys are kept: "sentences" counts sequences and "tokens" counts time steps."""
    recon, kl = -(log_px * mask).sum(1), (kl * mask).sum(1)
    loss = (recon + kl_weight * kl).mean()
    return ModelOutput(loss, {"recon": recon.sum().detach(), "kl": kl.sum().detach(),
                              "sentences": torch.tensor(float(mask.size(0))), "tokens": mask.sum()})
