"""NVDM, the neural variational document model of Miao, Yu & Blunsom (2016, "Neural Variational Inference for
Text Processing", §3): a bag-of-words VAE over whole documents.

    prior      p(h) = N(0, I),  h in R^K
    inference  q(h | X) = N(mu(X), diag(sigma^2(X))),  pi = MLP(X),  mu = l1(pi),  log sigma = l2(pi)
    generation p(X | h) = prod_i p(x_i | h),  p(x_i | h) = exp(-E(x_i; h)) / sum_j exp(-E(x_j; h)),
               E(x_i; h) = -h^T R x_i - b_{x_i}                                    (a softmax over the vocabulary)
    bound      L = E_q[sum_i log p(x_i | h)] - KL(q(h | X) || p(h))                 (Eq. 5)
    perplexity exp(-(1/D) sum_d log p(X_d) / N_d),  log p(X_d) replaced by its bound (§5.2)

X is the document's word-count vector: `recon` = -sum_w n_w log softmax(R^T h + b)_w, the KL is analytic and
log p(X) is also estimated by importance sampling with q as the proposal.

Choices beyond the excerpt we have (paper text and our own):
- A document is one row of a standard text batch; its bag of words is built here from `targets`. The bag
  holds the vocabulary's words only: <pad>, <s> and </s> never enter it (NVDM models no word order, hence
  no end of document), and neither does <unk> unless `include_unknown` is set, as the paper's corpora keep
  only the words of a fixed vocabulary (2000 for 20News, 10000 for RCV1). The softmax runs over exactly
  these words, and totals["steps"] counts them, so ppl = exp(sum of bounds / sum of N_d).
- The excerpt we work from lacks §3's inference network and §5.1's set-up: an MLP on the raw counts of
  `encoder_layers` (2) layers of 500 rectifier units is our recollection of the paper; tanh is an option.
- The paper updates the generative model and the inference network alternately, each with the other fixed;
  the shared trainer takes one optimiser step on both at once (joint training, as in a standard VAE).
- With no word order there is no sequence to decode: `decode`/`sample_prior` return a document's most likely
  words (greedy) or words drawn from p(x | h), as ids ending in </s>.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pipelines.errors import SeqlvmError
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from seqlvm.models.base import ModelOutput, TextModel
from seqlvm.models.fields import size
from seqlvm.models.heads import gaussian_parameters
from seqlvm.objectives import gaussian_kl, log_normal

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass
class NVDMConfig:
    # Defaults: the paper's 20News model (§5.1): 500 hidden units, a 50-dimensional latent (200 also reported).
    hidden_dim: int = size(500)
    encoder_layers: int = size(2)
    activation: str = "relu"  # relu | tanh
    latent_dim: int = size(50)
    include_unknown: bool = False  # whether <unk> is a word of the bag (the paper drops out-of-vocabulary words)

    def validate(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise SeqlvmError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}")


def bag_of_words(targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T) token ids -> (B, vocab_size) float counts; padding lands in the <pad> column."""
    counts = torch.zeros(targets.size(0), vocab_size, device=targets.device)
    return counts.scatter_add_(1, targets, torch.ones_like(targets, dtype=counts.dtype))


def encoder_mlp(in_dim: int, hidden: int, layers: int, activation: str) -> nn.Sequential:
    modules, width = [], in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
        width = hidden
    return nn.Sequential(*modules)


class NVDM(TextModel):
    """Neural variational document model (Miao et al. 2016): MLP encoder, Gaussian latent, softmax over words."""

    name = "nvdm"
    config_class = NVDMConfig
    has_global_latent = True

    def __init__(self, config: NVDMConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        excluded = {PAD_ID, BOS_ID, EOS_ID} | (set() if config.include_unknown else {UNK_ID})
        # Derived from the config, so not saved with the weights.
        self.register_buffer("word_ids", torch.tensor([i for i in range(vocab_size) if i not in excluded],
                                                      dtype=torch.long), persistent=False)
        words = len(self.word_ids)
        self.encoder = encoder_mlp(words, config.hidden_dim, config.encoder_layers, config.activation)
        self.to_posterior = nn.Linear(config.hidden_dim, 2 * config.latent_dim)  # l1, l2
        self.decoder = nn.Linear(config.latent_dim, words)  # weight R^T, bias b: the logits -E(x; h)

    def word_counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, words) counts of the modelled words in each document; column j is vocabulary id word_ids[j]."""
        return bag_of_words(batch["targets"], self.vocab_size)[:, self.word_ids]

    def _posterior(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_parameters(self.to_posterior(self.encoder(counts)))

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """q(h | X): (mu, logvar), each (B, latent)."""
        return self._posterior(self.word_counts(batch))

    def word_log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """(..., latent) -> (..., words) log p(x | h) over the modelled words."""
        return F.log_softmax(self.decoder(h).float(), dim=-1)

    def reconstruction_nll(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """-log p(X | h) = -sum_w n_w log p(w | h); h (..., B, latent), counts (B, words) -> (..., B)."""
        return -(counts * self.word_log_probs(h)).sum(-1)

    def document_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per document (B,): recon (one sample of h), analytic KL, and words N_d."""
        counts = self.word_counts(batch)
        mu, logvar = self._posterior(counts)
        h = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return {"recon": self.reconstruction_nll(h, counts), "kl": gaussian_kl(mu, logvar), "words": counts.sum(-1)}

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        terms = self.document_terms(batch)
        recon, kl = terms["recon"], terms["kl"]
        loss = (recon + kl_weight * kl).mean()
        return ModelOutput(loss, {"recon": recon.sum().detach(), "kl": kl.sum().detach(),
                                  "sequences": torch.tensor(float(recon.size(0))),
                                  # No word order, so no steps: the modelled words stand in for them.
                                  "steps": terms["words"].sum().detach()})

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        counts = self.word_counts(batch)
        mu, logvar = self._posterior(counts)
        h = mu + (0.5 * logvar).exp() * torch.randn(num_samples, *mu.shape, device=mu.device)
        return log_normal(h) - log_normal(h, mu, logvar) - self.reconstruction_nll(h, counts)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        """A "document" per latent: its max_len - 1 most likely words (greedy, each once) or as many words drawn
        with replacement from p(x | h) sharpened by the temperature, then </s>: (num, <= max_len) ids."""
        logits = self.decoder(z).float()
        length = min(max_len - 1, logits.size(-1)) if greedy else max_len - 1
        if length < 1:
            picks = logits.new_zeros(z.size(0), 0, dtype=torch.long)
        elif greedy:
            picks = logits.topk(length, dim=-1).indices
        else:
            picks = torch.multinomial(F.softmax(logits / temperature, dim=-1), length, replacement=True)
        eos = torch.full((z.size(0), 1), EOS_ID, dtype=torch.long, device=z.device)
        return torch.cat([self.word_ids[picks], eos], dim=1)

    @torch.no_grad()
    def sample_prior(self, num: int, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        h = torch.randn(num, self.config.latent_dim, device=self.decoder.weight.device)
        return self.decode(h, greedy, max_len, temperature)
