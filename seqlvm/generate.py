"""Decoding sentences: from the prior (greedy and sampled), from the posterior of given sentences, and along
a homotopy (linear path) between two sentences' posterior means (Bowman et al., Table 8)."""
from __future__ import annotations

import torch

from pipelines.errors import SeqlvmError
from pipelines.stream import collate
from pipelines.text import TextOptions, tokenize
from pipelines.vocab import Vocab
from seqlvm.models import TextModel


def _text(vocab: Vocab, rows: torch.Tensor) -> list[str]:
    return [vocab.text(row) for row in rows]


def encode_sentences(model: TextModel, vocab: Vocab, sentences: list[str],
                     options: TextOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    if not model.has_global_latent:
        raise SeqlvmError(f"model {model.name!r} has no global latent space to encode sentences into")
    options = options or TextOptions(unit="char" if vocab.is_characters else "word")
    token_ids = [vocab.encode(tokenize(s, options)) for s in sentences]
    if any(len(ids) == 0 for ids in token_ids):
        raise SeqlvmError("cannot encode an empty sentence")
    return model.encode(collate(token_ids))


@torch.no_grad()
def from_prior(model: TextModel, vocab: Vocab, n: int, greedy: bool, max_len: int = 40,
               temperature: float = 1.0) -> list[str]:
    return _text(vocab, model.sample_prior(n, greedy=greedy, max_len=max_len, temperature=temperature))


@torch.no_grad()
def reconstruct(model: TextModel, vocab: Vocab, sentences: list[str], max_len: int = 40) -> list[str]:
    """Greedy decodes of each sentence's posterior mean."""
    mu, _ = encode_sentences(model, vocab, sentences)
    return _text(vocab, model.decode(mu, max_len=max_len))


@torch.no_grad()
def from_posterior(model: TextModel, vocab: Vocab, sentences: list[str], n: int = 3,
                   max_len: int = 40) -> list[tuple[str, str, list[str]]]:
    """For each sentence: (input, greedy decode of the posterior mean, n greedy decodes of posterior samples)."""
    mu, logvar = encode_sentences(model, vocab, sentences)
    means = _text(vocab, model.decode(mu, max_len=max_len))
    out = []
    for i, sentence in enumerate(sentences):
        z = mu[i] + (0.5 * logvar[i]).exp() * torch.randn(n, mu.size(1))
        out.append((sentence, means[i], _text(vocab, model.decode(z, max_len=max_len))))
    return out


@torch.no_grad()
def homotopy(model: TextModel, vocab: Vocab, first: str, second: str, steps: int = 7,
             max_len: int = 40) -> list[str]:
    """Greedy decodes of z(t) = (1 - t) mu_1 + t mu_2 for t evenly spaced on [0, 1]."""
    mu, _ = encode_sentences(model, vocab, [first, second])
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return _text(vocab, model.decode((1 - t) * mu[0] + t * mu[1], max_len=max_len))
