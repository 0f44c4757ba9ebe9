"""The recurrent language-model decoder shared by the sentence VAE and its RNNLM baseline: an LSTM, or a GRU
(the baseline of Schmidt & Hofmann 2018); and the word dropout of a decoder's inputs (the hybrid VAE's too).

With a latent z, z sets the initial hidden state (LSTM cell state zero, as in Kruengkrai 2019) and can also be
concatenated to every step's input embedding. Without one, it is a plain RNN language model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from seqlvm.objectives import word_dropout

RNN_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def decoder_inputs(batch: dict[str, torch.Tensor], keep_rate: float, training: bool) -> torch.Tensor:
    """A batch's `inputs` (<s> x_1 .. x_{T-1}), in training with word dropout (never on <s> or padding)."""
    inputs = batch["inputs"]
    if not training:
        return inputs
    return word_dropout(inputs, keep_rate, UNK_ID, protected=(inputs == BOS_ID) | (inputs == PAD_ID))


class RNNDecoder(nn.Module):
    def __init__(self, embedding: nn.Embedding, hidden_dim: int, latent_dim: int = 0,
                 z_every_step: bool = False, embedding_dropout: float = 0.0, hidden_dropout: float = 0.0,
                 cell: str = "lstm"):
        super().__init__()
        self.embedding = embedding
        self.latent_dim = latent_dim
        self.z_every_step = z_every_step and latent_dim > 0
        input_dim = embedding.embedding_dim + (latent_dim if self.z_every_step else 0)
        self.cell = cell
        # Registered under the cell's name ("lstm" or "gru"), so LSTM checkpoints keep their parameter names.
        self.add_module(cell, RNN_CELLS[cell](input_dim, hidden_dim, batch_first=True))
        self.z_to_hidden = nn.Linear(latent_dim, hidden_dim) if latent_dim else None
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.to_vocab = nn.Linear(hidden_dim, embedding.num_embeddings)

    @property
    def rnn(self) -> nn.LSTM | nn.GRU:
        return getattr(self, self.cell)

    def _initial_state(self, z: torch.Tensor | None, batch: int, device) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """h0 (from z, else zeros); an LSTM also gets a zero cell state."""
        zeros = torch.zeros(1, batch, self.rnn.hidden_size, device=device)
        h0 = zeros if z is None else self.z_to_hidden(z).unsqueeze(0)
        return (h0, zeros) if self.cell == "lstm" else h0

    def _step_inputs(self, tokens: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        x = self.embedding_dropout(self.embedding(tokens))
        if self.z_every_step:
            x = torch.cat([x, z.unsqueeze(1).expand(-1, x.size(1), -1)], dim=-1)
        return x

    def hidden_states(self, tokens: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T) input tokens, z (N, latent) or None -> (N, T, hidden) decoder states (teacher forcing)."""
        state = self._initial_state(z, tokens.size(0), tokens.device)
        out, _ = self.rnn(self._step_inputs(tokens, z), state)
        return out

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return self.to_vocab(self.hidden_dropout(states))

    def sentence_nll(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-log p(targets | states) summed over each sentence's non-pad tokens: (..., T, H) -> (...)."""
        logits = self.logits(states)
        targets = targets.expand(*logits.shape[:-1])
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                              ignore_index=PAD_ID, reduction="none")
        return nll.view(logits.shape[:-1]).sum(-1)

    @torch.no_grad()
    def generate(self, z: torch.Tensor | None, num: int, max_len: int = 40, greedy: bool = True,
                 temperature: float = 1.0) -> torch.Tensor:
        """Decode `num` sentences (from z (num, latent) if given). Returns (num, <=max_len) ids ending in EOS/PAD."""
        device = self.to_vocab.weight.device
        state = self._initial_state(z, num, device)
        token = torch.full((num, 1), BOS_ID, dtype=torch.long, device=device)
        finished = torch.zeros(num, dtype=torch.bool, device=device)
        out = []
        for _ in range(max_len):
            hidden, state = self.rnn(self._step_inputs(token, z), state)
            logits = self.to_vocab(hidden[:, -1])
            logits[:, PAD_ID] = -float("inf")
            logits[:, BOS_ID] = -float("inf")
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.distributions.Categorical(logits=logits / temperature).sample()
            nxt = torch.where(finished, torch.full_like(nxt, PAD_ID), nxt)
            out.append(nxt)
            finished |= nxt == EOS_ID
            if finished.all():
                break
            token = nxt.unsqueeze(1)
        return torch.stack(out, dim=1)
