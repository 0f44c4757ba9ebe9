"""Bowman et al. (2016) sentence VAE, with the multi-sample and hidden-state-averaging extensions of
Kruengkrai (2019, LSTM-VAE-AVG).

Encoder: LSTM over the sentence, last hidden state -> mu, log sigma^2 of a diagonal Gaussian q(z|x).
Decoder: LSTM language model whose initial state is a linear map of z (optionally z at every step too),
weakened by word dropout. The KL to N(0, I) is computed in closed form and weighted by the annealing schedule.

With `latent_samples` L > 1 the reconstruction term is averaged over L samples of z (Kruengkrai Eq. 3), or,
with `average_hidden`, the L decoder states are averaged at every step before the softmax (Eq. 7-8).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.errors import SeqlvmError
from pipelines.vocab import PAD_ID
from seqlvm.models.base import ModelOutput, TextModel
from seqlvm.models.decoder import RNNDecoder, decoder_inputs
from seqlvm.objectives import gaussian_kl, log_normal


@dataclass
class SentenceVAEConfig:
    # Defaults: the Penn Treebank VAE of Bowman et al., Table 11 (Bayesian-optimised).
    embedding_dim: int = 353
    hidden_dim: int = 191
    latent_dim: int = 13
    word_keep_rate: float = 0.62
    latent_samples: int = 1
    average_hidden: bool = False
    z_every_step: bool = False
    embedding_dropout: float = 0.0
    hidden_dropout: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.word_keep_rate <= 1.0:
            raise SeqlvmError(f"model.word_keep_rate must be in [0, 1], got {self.word_keep_rate}")
        if self.latent_samples < 1 or self.latent_dim < 1:
            raise SeqlvmError("model.latent_samples and model.latent_dim must be at least 1")


class SentenceVAE(TextModel):
    """LSTM sentence VAE (Bowman et al. 2016), optionally multi-sample / hidden-state averaging (LSTM-VAE-AVG)."""

    name = "sentence-vae"
    config_class = SentenceVAEConfig
    has_global_latent = True

    def __init__(self, config: SentenceVAEConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.encoder = nn.LSTM(config.embedding_dim, config.hidden_dim, batch_first=True)
        self.to_posterior = nn.Linear(config.hidden_dim, 2 * config.latent_dim)
        self.decoder = RNNDecoder(self.embedding, config.hidden_dim, config.latent_dim, config.z_every_step,
                                   config.embedding_dropout, config.hidden_dropout)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (mu, logvar), each (B, latent), from the encoder's last hidden state over `targets`."""
        embedded = self.embedding(batch["targets"])
        packed = nn.utils.rnn.pack_padded_sequence(embedded, batch["lengths"].cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, (h_last, _) = self.encoder(packed)
        mu, logvar = self.to_posterior(h_last[-1]).chunk(2, dim=-1)
        return mu, logvar

    def reconstruction_nll(self, z: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor,
                           group: int = 1) -> torch.Tensor:
        """z (S*group, B, latent) -> -log p(x | z) of shape (S, B).

        Each consecutive `group` of samples shares one prediction: their decoder states are averaged at
        every step (hidden-state averaging); group=1 is the plain decoder.
        """
        samples, batch, _ = z.shape
        states = self.decoder.hidden_states(tokens.repeat(samples, 1), z.reshape(samples * batch, -1))
        states = states.view(samples // group, group, batch, *states.shape[1:]).mean(1)
        return self.decoder.sentence_nll(states, targets)

    def _group(self) -> int:
        return self.config.latent_samples if self.config.average_hidden else 1

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        mu, logvar = self.encode(batch)
        L = self.config.latent_samples
        z = mu + (0.5 * logvar).exp() * torch.randn(L, *mu.shape, device=mu.device)
        tokens = decoder_inputs(batch, self.config.word_keep_rate, self.training)
        recon = self.reconstruction_nll(z, tokens, batch["targets"], self._group()).mean(0)
        kl = gaussian_kl(mu, logvar)
        loss = (recon + kl_weight * kl).mean()
        return ModelOutput(loss, {"recon": recon.sum().detach(), "kl": kl.sum().detach(),
                                  "sequences": torch.tensor(float(mu.size(0))),
                                  "steps": (batch["targets"] != PAD_ID).sum().float()})

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        # With hidden averaging the decoder conditions on `group` latents at once, so one importance sample
        # is a group of latents and its weight carries each member's prior/posterior ratio.
        mu, logvar = self.encode(batch)
        group = self._group()
        z = mu + (0.5 * logvar).exp() * torch.randn(num_samples * group, *mu.shape, device=mu.device)
        log_ratio = log_normal(z) - log_normal(z, mu, logvar)
        log_ratio = log_ratio.view(num_samples, group, -1).sum(1)
        return log_ratio - self.reconstruction_nll(z, batch["inputs"], batch["targets"], group)

    @torch.no_grad()
    def sample_prior(self, num: int, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        z = torch.randn(num, self.config.latent_dim, device=self.embedding.weight.device)
        return self.decoder.generate(z, num, max_len, greedy, temperature)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        return self.decoder.generate(z, z.size(0), max_len, greedy, temperature)
