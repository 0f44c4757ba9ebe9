"""What every model shares: a config dataclass, construction from (config, input size), and a forward pass that
returns the loss plus summed metrics, so training, evaluation and logging never special-case a model.

A model is a `TextModel` (token ids, built from the vocabulary size) or a `FrameModel` (real or binary frames,
built from the frame dimension); each declares what generation, evaluation and serving may ask of it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from pipelines.modalities import FRAME_MODALITIES


@dataclass
class ModelOutput:
    loss: torch.Tensor  # scalar to minimise (mean over sequences of recon + kl_weight * kl)
    # Sums over the batch, so workers can all-reduce them: recon, kl, sequences, steps (tokens or time steps),
    # and any model-specific extras.
    totals: dict[str, torch.Tensor]


class SequenceModel(nn.Module):
    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    modalities: ClassVar[tuple[str, ...]] = ()  # the manifest modalities this model reads
    size_arg: ClassVar[str] = ""  # the constructor argument (and attribute) holding the input size
    has_latent: ClassVar[bool] = True
    # One latent per sequence, read by `encode` and decoded by `decode` (text models only).
    has_global_latent: ClassVar[bool] = False
    # Whether `decode` reconstructs the sentence itself, so that its posterior decodes show whether z is used (the
    # collapse guard's decode checks); NVDM's decode is a document's likeliest words, not the document.
    decodes_sentences: ClassVar[bool] = False
    # Whether `train.mixed_precision=auto` trains it under bf16 autocast on a CPU with native bf16: only models
    # whose ops all run in bf16 and whose speed-up was measured (benchmarks/train_speed.py).
    bf16_on_cpu: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def sweep_recipe(cls, max_steps: int) -> dict | None:
        """The default search space of `seqlvm tune` for this model, in a config file's `tune.space` form
        (tune/space.py): what is known to work for it, searched around. None: the generic space of the papers'
        questions."""
        return None

    def constructor_args(self) -> dict:
        """Everything needed to rebuild this model from a checkpoint: plain data, no code."""
        return {"name": self.name, "config": dataclasses.asdict(self.config),
                self.size_arg: getattr(self, self.size_arg)}

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


class TextModel(SequenceModel):
    """A model of token sequences; batches hold `inputs`, `targets` (B, T) and `lengths`."""

    modalities = ("text",)
    size_arg = "vocab_size"
    # Defines `mutual_information`, the per-step I(t) of the word-generation task.
    has_mutual_information: ClassVar[bool] = False

    def __init__(self, config, vocab_size: int):
        super().__init__(config)
        self.vocab_size = vocab_size

    def sample_prior(self, num: int, greedy: bool = True, max_len: int = 40,
                     temperature: float = 1.0) -> torch.Tensor:
        """(num, <= max_len) token ids from the prior, each row ending in </s> then padding."""
        raise NotImplementedError

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) of the global latent: (mu, logvar), each (B, latent). Only with `has_global_latent`."""
        raise NotImplementedError(f"model {self.name!r} has no global latent")

    def decode(self, z: torch.Tensor, greedy: bool = True, max_len: int = 40,
               temperature: float = 1.0) -> torch.Tensor:
        """(N, <= max_len) token ids from (N, latent) z. Only with `has_global_latent`."""
        raise NotImplementedError(f"model {self.name!r} has no global latent")

    def mutual_information(self, **options) -> torch.Tensor:
        """(steps,) I(t) in nats between each step's noise and token. Only with `has_mutual_information`."""
        raise NotImplementedError(f"model {self.name!r} defines no per-step mutual information")


class FrameModel(SequenceModel):
    """A model of frame sequences; batches hold `frames` (B, T, frame_dim) and `lengths`."""

    modalities = FRAME_MODALITIES
    size_arg = "frame_dim"

    def __init__(self, config, frame_dim: int):
        super().__init__(config)
        self.frame_dim = frame_dim

    def sample_prior(self, num: int, steps: int = 100) -> torch.Tensor:
        """(num, steps, frame_dim) frames generated from the prior."""
        raise NotImplementedError


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) float mask of a batch of sequences: 1 for real steps, 0 for padding."""
    return (torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]).float()


def frame_totals(log_px: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_weight: float) -> ModelOutput:
    """The output of a per-step latent model from (B, T) log p(x_t | ...) and KL terms."""
    recon, kl = -(log_px * mask).sum(1), (kl * mask).sum(1)
    loss = (recon + kl_weight * kl).mean()
    return ModelOutput(loss, {"recon": recon.sum().detach(), "kl": kl.sum().detach(),
                              "sequences": torch.tensor(float(mask.size(0))), "steps": mask.sum()})
