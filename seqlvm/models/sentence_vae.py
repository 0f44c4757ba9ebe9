"""Bowman et al. (2016) sentence VAE, with the multi-sample and hidden-state-averaging extensions of
Kruengkrai (2019, LSTM-VAE-AVG).

Encoder: LSTM over the sentence, last hidden state -> mu, log sigma^2 of a diagonal Gaussian q(z|x).
Decoder: LSTM language model whose initial state is a linear map of z (optionally z at every step too),
weakened by word dropout. The KL to N(0, I) is computed in closed form and weighted by the annealing schedule.

With `latent_samples` L > 1 the reconstruction term is averaged over L samples of z (Kruengkrai Eq. 3), or,
with `average_hidden`, the L decoder states are averaged at every step before the softmax (Eq. 7-8).

Two training-only terms keep the decoder from ignoring z (posterior collapse); neither changes the reported
ELBO, whose KL is always the true one:
- `free_bits` (Kingma et al. 2016): each latent dimension's KL, averaged over the batch, costs at least this
  many nats, so the optimiser gains nothing by pushing a dimension's KL below it;
- `bow_weight` (Zhao et al. 2017): z must also predict the sentence's bag of words without the decoder, so it
  has to carry the sentence's content.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.vocab import PAD_ID
from seqlvm.models.base import ModelOutput, TextModel
from seqlvm.models.decoder import RNNDecoder, decoder_inputs
from seqlvm.models.fields import non_negative, rate, size
from seqlvm.objectives import gaussian_kl, log_normal


@dataclass
class SentenceVAEConfig:
    # Defaults: the Penn Treebank VAE of Bowman et al., Table 11 (Bayesian-optimised).
    embedding_dim: int = size(353)
    hidden_dim: int = size(191)
    latent_dim: int = size(13)
    word_keep_rate: float = rate(0.62)
    latent_samples: int = size(1)
    average_hidden: bool = False
    z_every_step: bool = False
    embedding_dropout: float = rate(0.0)
    hidden_dropout: float = rate(0.0)
    free_bits: float = non_negative(0.0)  # nats per latent dimension; 0 = the plain KL term
    bow_weight: float = non_negative(0.0)  # weight of the bag-of-words loss; 0 = none


class SentenceVAE(TextModel):
    """LSTM sentence VAE (Bowman et al. 2016), optionally multi-sample / hidden-state averaging (LSTM-VAE-AVG)."""

    name = "sentence-vae"
    config_class = SentenceVAEConfig
    has_global_latent = True
    decodes_sentences = True
    bf16_on_cpu = True

    @classmethod
    def sweep_recipe(cls, max_steps: int) -> dict:
        # The main job's recipe (seqlvm/configs/sweep-sentence-vae.yaml), with which the latent is used: z at every
        # decoder step, the bag-of-words loss, free bits, strong word dropout and two cycles of cyclical annealing.
        # More free bits and a faster rate than the main job's: in 400 steps those decode 40-79 % of sentences
        # distinctly, the main job's range 19-30 % (docs/results.md, "A sweep without a config"). Each evaluation
        # reads 10 batches (640 sentences), as the main job does.
        return {
            "model.embedding_dim": 128, "model.hidden_dim": 192, "model.latent_dim": 16,
            "model.z_every_step": True, "model.bow_weight": 1.0, "train.batch_size": 64,
            "train.kl_anneal": "cyclical", "train.kl_cycle_steps": max(1, max_steps // 2), "train.eval_batches": 10,
            "model.free_bits": {"uniform": [1.0, 1.5]},
            "model.word_keep_rate": {"uniform": [0.1, 0.3]},
            "train.lr": {"loguniform": [0.003, 0.0045]},
        }

    def __init__(self, config: SentenceVAEConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.encoder = nn.LSTM(config.embedding_dim, config.hidden_dim, batch_first=True)
        self.to_posterior = nn.Linear(config.hidden_dim, 2 * config.latent_dim)
        self.decoder = RNNDecoder(self.embedding, config.hidden_dim, config.latent_dim, config.z_every_step,
                                   config.embedding_dropout, config.hidden_dropout)
        self.bag_of_words = nn.Linear(config.latent_dim, vocab_size) if config.bow_weight > 0 else None

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (mu, logvar), each (B, latent), from the encoder's hidden state at each sentence's last token.

        The LSTM runs over the padded batch (a packed sequence takes a much slower path on the CPU); the state at
        the last real token has seen no padding."""
        states, _ = self.encoder(self.embedding(batch["targets"]))
        last = states[torch.arange(states.size(0), device=states.device), batch["lengths"] - 1]
        mu, logvar = self.to_posterior(last).float().chunk(2, dim=-1)
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
        loss = recon.mean() + kl_weight * self._kl_cost(mu, logvar, kl)
        if self.bag_of_words is not None:
            loss = loss + self.config.bow_weight * self._bag_of_words_nll(z, batch["targets"]).mean()
        return ModelOutput(loss, {"recon": recon.sum().detach(), "kl": kl.sum().detach(),
                                  "sequences": torch.tensor(float(mu.size(0))),
                                  "steps": (batch["targets"] != PAD_ID).sum().float()})

    def _kl_cost(self, mu: torch.Tensor, logvar: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        """The KL term the optimiser sees: the mean KL, or with free bits each dimension's batch-mean KL floored."""
        if not self.config.free_bits:
            return kl.mean()
        per_dimension = gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)
        return per_dimension.clamp(min=self.config.free_bits).sum()

    def _bag_of_words_nll(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B,) -log prod_t p_bow(x_t | z) over each sentence's tokens, one softmax over the vocabulary per z."""
        log_probs = torch.log_softmax(self.bag_of_words(z).float(), dim=-1).mean(0)  # (B, V), over z's samples
        return -(log_probs.gather(1, targets) * (targets != PAD_ID)).sum(1)

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
