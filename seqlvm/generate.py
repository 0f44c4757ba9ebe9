"""Decoding sentences: from the prior (greedy and sampled), from the posterior of given sentences, and along
a homotopy (linear path) between two sentences' posterior means (Bowman et al., Table 8). Sentences are
tokenised as the model's corpus was prepared (its `DataDescription`)."""
from __future__ import annotations

import torch

from pipelines.description import DataDescription
from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from seqlvm.models import TextModel


def _text(data: DataDescription, rows: torch.Tensor) -> list[str]:
    return [data.text(row) for row in rows]


def encode_sentences(model: TextModel, data: DataDescription,
                     sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z|x) of each sentence: (mu, logvar), each (N, latent)."""
    if not model.has_global_latent:
        raise SeqlvmError(f"model {model.name!r} has no global latent space to encode sentences into")
    return model.encode(collate(data.encode_sentences(sentences)))


@torch.no_grad()
def from_prior(model: TextModel, data: DataDescription, n: int, greedy: bool, max_len: int = 40,
               temperature: float = 1.0) -> list[str]:
    return _text(data, model.sample_prior(n, greedy=greedy, max_len=max_len, temperature=temperature))


@torch.no_grad()
def reconstruct(model: TextModel, data: DataDescription, sentences: list[str], max_len: int = 40) -> list[str]:
    """Greedy decodes of each sentence's posterior mean."""
    mu, _ = encode_sentences(model, data, sentences)
    return _text(data, model.decode(mu, max_len=max_len))


@torch.no_grad()
def from_posterior(model: TextModel, data: DataDescription, sentences: list[str], n: int = 3,
                   max_len: int = 40) -> list[tuple[str, str, list[str]]]:
    """For each sentence: (input, greedy decode of the posterior mean, n greedy decodes of posterior samples)."""
    mu, logvar = encode_sentences(model, data, sentences)
    means = _text(data, model.decode(mu, max_len=max_len))
    out = []
    for i, sentence in enumerate(sentences):
        z = mu[i] + (0.5 * logvar[i]).exp() * torch.randn(n, mu.size(1))
        out.append((sentence, means[i], _text(data, model.decode(z, max_len=max_len))))
    return out


@torch.no_grad()
def homotopy(model: TextModel, data: DataDescription, first: str, second: str, steps: int = 7,
             max_len: int = 40) -> list[str]:
    """Greedy decodes of z(t) = (1 - t) mu_1 + t mu_2 for t evenly spaced on [0, 1]."""
    mu, _ = encode_sentences(model, data, [first, second])
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return _text(data, model.decode((1 - t) * mu[0] + t * mu[1], max_len=max_len))
