"""The RNN language-model baseline of Bowman et al.: the sentence VAE's decoder with no latent variable; with
`cell: gru`, the GRU baseline of Schmidt & Hofmann (2018)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.errors import SeqlvmError
from pipelines.vocab import PAD_ID
from seqlvm.models.base import ModelOutput, TextModel
from seqlvm.models.decoder import RNN_CELLS, RNNDecoder, decoder_inputs
from seqlvm.models.fields import rate, size


@dataclass
class RNNLMConfig:
    # Defaults: Bowman et al., Table 11, standard RNNLM.
    embedding_dim: int = size(464)
    hidden_dim: int = size(337)
    word_keep_rate: float = rate(0.66)
    embedding_dropout: float = rate(0.0)
    hidden_dropout: float = rate(0.0)
    cell: str = "lstm"  # lstm | gru

    def validate(self) -> None:
        if self.cell not in RNN_CELLS:
            raise SeqlvmError(f"model.cell must be {' or '.join(RNN_CELLS)}, got {self.cell!r}")


class RNNLM(TextModel):
    """LSTM (or GRU) language model: the sentence VAE's decoder without a latent (the baseline of Bowman et al.)."""

    name = "rnnlm"
    config_class = RNNLMConfig
    has_latent = False

    def __init__(self, config: RNNLMConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.decoder = RNNDecoder(self.embedding, config.hidden_dim, 0, False,
                                   config.embedding_dropout, config.hidden_dropout, config.cell)

    def _nll(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.decoder.sentence_nll(self.decoder.hidden_states(tokens), targets)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        nll = self._nll(decoder_inputs(batch, self.config.word_keep_rate, self.training), batch["targets"])
        return ModelOutput(nll.mean(), {"recon": nll.sum().detach(), "kl": torch.zeros(()),
                                        "sequences": torch.tensor(float(nll.size(0))),
                                        "steps": (batch["targets"] != PAD_ID).sum().float()})

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        return -self._nll(batch["inputs"], batch["targets"]).unsqueeze(0)

    @torch.no_grad()
    def sample_prior(self, num: int, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        return self.decoder.generate(None, num, max_len, greedy, temperature)
