"""The hybrid convolutional-recurrent VAE of Semeniuta, Severyn & Barth (2017), for character-level text.

Encoder: strided 1-D convolutions (kernel 3, stride 2, batch norm, ReLU) over the one-hot characters of a
fragment padded to the model's fixed size, then a linear map to mu, log sigma^2 of q(z|x) (Fig. 2a).
Decoder: a linear map of z to a short, wide feature map, then transposed convolutions that double its length
per layer back to the fragment size (§3.2). The last deconvolutional layer's features f_t(z) feed

    a historyless softmax       p(x_t | z)             = softmax(W_aux f_t(z))                    (Eq. 2)
    a language model on top     p(x_t | z, x_<t)       from [onehot(x_{t-1}), f_t(z)]            (Fig. 2b, 2c)
                                (`lm: lstm`, an LSTM; `lm: bytenet`, masked convolutions of kernel 2 whose
                                receptive field is bytenet_layers + 1 characters, §4.2; `lm: none`, Fig. 2a)

and the training cost is
    J_vae    = KL(q(z|x) || N(0, I)) - E_q[sum_t log p(x_t | z, x_<t)]                           (Eq. 1)
    J_hybrid = J_vae + alpha J_aux,  J_aux = -E_q[sum_t log p(x_t | z)]                           (Eq. 3, 4)
with alpha = `aux_weight` and the KL weighted by the trainer's annealing schedule (linear in the paper).
The reported recon and kl totals are J_vae's two terms only: J_aux trains the model but is no part of the
bound. With `lm: none` the historyless softmax is the decoder itself, so J_aux would repeat the
reconstruction term and alpha is not applied.

Defaults follow the authors' PTB character models: 2 encoder/decoder layers of 128 and 256 maps, 200
deconvolutional features, a 50-dimensional z, a 500-unit LSTM, alpha = 0.2 (Fig. 4) and no input dropout
(the paper drops the LSTM VAE's inputs, not the hybrid's; `history_keep_rate` < 1 drops the LM's history
like Bowman et al.'s word dropout). The paper's LSTM uses layer normalisation; this one is a plain LSTM.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.errors import SeqlvmError
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID
from seqlvm.models.base import ModelOutput, TextModel
from seqlvm.models.decoder import decoder_inputs
from seqlvm.models.fields import non_negative, rate, size
from seqlvm.models.heads import gaussian_parameters
from seqlvm.objectives import gaussian_kl, log_normal

LANGUAGE_MODELS = ("lstm", "bytenet", "none")


@dataclass
class HybridVAEConfig:
    max_length: int = size(60)  # the longest text in tokens (</s> not counted): the deconvolution's fixed output size
    latent_dim: int = size(50)
    conv_layers: int = size(2)  # encoder and decoder layers, each halving (doubling) the length
    # the first encoder layer's maps; each next layer doubles them up to max_conv_channels
    conv_channels: int = size(128)
    max_conv_channels: int = size(512)
    feature_dim: int = size(200)  # maps of the last deconvolutional layer
    lm: str = "lstm"  # lstm | bytenet | none
    lm_hidden: int = size(500)  # LSTM units, or channels of each masked convolution
    bytenet_layers: int = size(4)
    bytenet_dilated: bool = False  # the paper's masked stack is undilated; true doubles the dilation per layer
    aux_weight: float = non_negative(0.2)  # alpha of Eq. 3
    history_keep_rate: float = rate(1.0)

    def validate(self) -> None:
        if self.lm not in LANGUAGE_MODELS:
            raise SeqlvmError(f"model.lm must be one of {', '.join(LANGUAGE_MODELS)}, not {self.lm!r}")

    def channels(self) -> list[int]:
        """Feature maps of the encoder's layers, bottom to top (the decoder's, top to bottom)."""
        return [min(self.conv_channels * 2 ** i, self.max_conv_channels) for i in range(self.conv_layers)]

    def base_length(self) -> int:
        """Length of the narrowest feature map: the steps (tokens and </s>) divided by 2 per layer, rounded up."""
        return math.ceil((self.max_length + 1) / 2 ** self.conv_layers)


def conv_block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm1d(channels), nn.ReLU())


def sequence_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log p(targets) summed over each sequence's non-pad positions: (N, T, V), (N, T) -> (N,)."""
    nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="none")
    return nll.sum(1)


class ConvEncoder(nn.Module):
    """q(z|x): strided convolutions over one-hot characters padded to the fixed size (Fig. 2a, left)."""

    def __init__(self, config: HybridVAEConfig, vocab_size: int):
        super().__init__()
        self.vocab_size, self.padded_length = vocab_size, config.base_length() * 2 ** config.conv_layers
        widths = [vocab_size] + config.channels()
        self.convs = nn.Sequential(*(conv_block(nn.Conv1d(w_in, w_out, 3, stride=2, padding=1), w_out)
                                     for w_in, w_out in zip(widths, widths[1:])))
        self.to_posterior = nn.Linear(widths[-1] * config.base_length(), 2 * config.latent_dim)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Always padding to the fixed size makes the posterior independent of how much the batch is padded.
        padded = F.pad(tokens, (0, self.padded_length - tokens.size(1)), value=PAD_ID)
        hidden = self.convs(F.one_hot(padded, self.vocab_size).float().transpose(1, 2))
        return gaussian_parameters(self.to_posterior(hidden.flatten(1)))


class DeconvDecoder(nn.Module):
    """z -> per-position features f_t(z), (N, padded length, feature_dim) (Fig. 2a, right)."""

    def __init__(self, config: HybridVAEConfig):
        super().__init__()
        top = config.channels()[::-1]
        self.base_shape = (top[0], config.base_length())
        self.from_latent = nn.Sequential(nn.Linear(config.latent_dim, top[0] * config.base_length()), nn.ReLU())
        widths = top + [config.feature_dim]
        self.deconvs = nn.Sequential(*(
            conv_block(nn.ConvTranspose1d(w_in, w_out, 3, stride=2, padding=1, output_padding=1), w_out)
            for w_in, w_out in zip(widths, widths[1:])))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        base = self.from_latent(z).view(z.size(0), *self.base_shape)
        return self.deconvs(base).transpose(1, 2)


class LSTMHistory(nn.Module):
    """An LSTM over [onehot(x_{t-1}), f_t(z)] (Fig. 2b)."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.lstm(inputs)[0]

    def step(self, inputs: torch.Tensor, state):
        """The last position's state from a generated prefix (N, t, input_dim), carrying the LSTM state."""
        out, state = self.lstm(inputs[:, -1:], state)
        return out[:, -1], state


class CausalConv(nn.Module):
    """A masked convolution of kernel 2 over (N, T, C) sequences: position t sees t - dilation and t only."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.left_pad = dilation
        self.conv = nn.Conv1d(in_channels, out_channels, 2, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x.transpose(1, 2), (self.left_pad, 0))).transpose(1, 2)


class ByteNetHistory(nn.Module):
    """A stack of masked convolutions over [onehot(x_{t-1}), f_t(z)] (Fig. 2c): without dilation the state at
    t depends on x_{t-layers-1} .. x_{t-1}. Layer normalisation over channels (not batch norm, whose statistics
    pool over time) keeps every layer causal in training too."""

    def __init__(self, input_dim: int, hidden: int, layers: int, dilated: bool):
        super().__init__()
        widths = [input_dim] + [hidden] * layers
        self.convs = nn.ModuleList(CausalConv(w_in, w_out, 2 ** i if dilated else 1)
                                   for i, (w_in, w_out) in enumerate(zip(widths, widths[1:])))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return x

    def step(self, inputs: torch.Tensor, state):
        # Recomputing the prefix costs O(T^2), negligible at the fixed fragment sizes this model generates.
        return self(inputs)[:, -1], state


class HybridVAE(TextModel):
    """Convolutional encoder, deconvolutional decoder and an LSTM or ByteNet language model on top, trained
    with the auxiliary historyless reconstruction (Semeniuta et al. 2017)."""

    name = "hybrid-vae"
    config_class = HybridVAEConfig
    has_global_latent = True
    decodes_sentences = True

    @classmethod
    def sweep_recipe(cls, max_steps: int) -> dict:
        # seqlvm/configs/hybrid-vae.yaml's recipe: the auxiliary reconstruction term (alpha) keeps the KL above
        # zero (`seqlvm reproduce hybrid`), with a linear KL warm-up over the first third of training.
        return {
            "model.lm": "lstm", "train.batch_size": 64, "train.kl_anneal": "linear",
            "train.kl_warmup_steps": max(1, max_steps // 3),
            "model.aux_weight": {"loguniform": [0.1, 0.5]},
            "model.history_keep_rate": {"uniform": [0.5, 1.0]},
            "train.lr": {"loguniform": [0.001, 0.003]},
        }

    def __init__(self, config: HybridVAEConfig, vocab_size: int):
        super().__init__(config, vocab_size)
        c = config
        self.encoder = ConvEncoder(c, vocab_size)
        self.deconv = DeconvDecoder(c)
        self.aux_classifier = nn.Linear(c.feature_dim, vocab_size)
        self.history = self._history_model(c, vocab_size + c.feature_dim)
        self.classifier = nn.Linear(c.lm_hidden, vocab_size) if self.history is not None else None

    @staticmethod
    def _history_model(c: HybridVAEConfig, input_dim: int) -> nn.Module | None:
        if c.lm == "lstm":
            return LSTMHistory(input_dim, c.lm_hidden)
        if c.lm == "bytenet":
            return ByteNetHistory(input_dim, c.lm_hidden, c.bytenet_layers, c.bytenet_dilated)
        return None

    @property
    def max_steps(self) -> int:
        return self.config.max_length + 1

    def _check_length(self, steps: int) -> None:
        if steps > self.max_steps:
            raise SeqlvmError(f"hybrid-vae reads texts of at most {self.config.max_length} tokens, got "
                              f"{steps - 1}; set model.max_length (or prepare shorter fragments)")

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x): (mu, logvar), each (B, latent), from the convolutional encoder over `targets`."""
        self._check_length(batch["targets"].size(1))
        return self.encoder(batch["targets"])

    def features(self, z: torch.Tensor, steps: int) -> torch.Tensor:
        """The deconvolutional features f_t(z) of the first `steps` positions: (N, steps, feature_dim)."""
        return self.deconv(z)[:, :steps]

    def aux_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the historyless p(x_t | z) (Eq. 2)."""
        return self.aux_classifier(features)

    def _history_inputs(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.one_hot(history, self.vocab_size).to(features.dtype), features], dim=-1)

    def token_logits(self, features: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Logits of p(x_t | z, x_<t) from (N, T, F) features and (N, T) history tokens (<s> x_1 .. x_{T-1})."""
        if self.history is None:
            return self.aux_logits(features)
        return self.classifier(self.history(self._history_inputs(features, history)))

    def _aux_weight(self) -> float:
        return self.config.aux_weight if self.history is not None else 0.0

    def _sample(self, mu: torch.Tensor, logvar: torch.Tensor, num: int) -> torch.Tensor:
        return mu + (0.5 * logvar).exp() * torch.randn(num, *mu.shape, device=mu.device, dtype=mu.dtype)

    def forward(self, batch: dict[str, torch.Tensor], kl_weight: float = 1.0) -> ModelOutput:
        targets = batch["targets"]
        mu, logvar = self.encode(batch)
        features = self.features(self._sample(mu, logvar, 1)[0], targets.size(1))
        history = decoder_inputs(batch, self.config.history_keep_rate, self.training)
        recon = sequence_nll(self.token_logits(features, history), targets)
        aux = sequence_nll(self.aux_logits(features), targets)
        kl = gaussian_kl(mu, logvar)
        loss = (recon + kl_weight * kl + self._aux_weight() * aux).mean()
        return ModelOutput(loss, {"recon": recon.sum().detach(), "kl": kl.sum().detach(),
                                  "sequences": torch.tensor(float(mu.size(0))),
                                  "steps": (targets != PAD_ID).sum().float(), "aux": aux.sum().detach()})

    def log_importance_weights(self, batch: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
        targets = batch["targets"]
        mu, logvar = self.encode(batch)
        z = self._sample(mu, logvar, num_samples)
        features = self.features(z.flatten(0, 1), targets.size(1))
        logits = self.token_logits(features, batch["inputs"].repeat(num_samples, 1))
        recon = sequence_nll(logits, targets.repeat(num_samples, 1)).view(num_samples, -1)
        return log_normal(z) - log_normal(z, mu, logvar) - recon

    def _next_logits(self, features: torch.Tensor, tokens: torch.Tensor, state):
        """Logits for the next token given the features and tokens of a prefix, both of length t."""
        if self.history is None:
            return self.aux_logits(features[:, -1]), state
        hidden, state = self.history.step(self._history_inputs(features, tokens), state)
        return self.classifier(hidden), state

    @torch.no_grad()
    def decode(self, z: torch.Tensor, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        """Texts from z (N, latent): (N, <= max_len) ids ending in </s> then padding; at most max_length + 1
        tokens, the longest the deconvolution produces."""
        steps = min(max_len, self.max_steps)
        features = self.features(z, steps)
        tokens = torch.full((z.size(0), 1), BOS_ID, dtype=torch.long, device=z.device)
        finished = torch.zeros(z.size(0), dtype=torch.bool, device=z.device)
        state, out = None, []
        for t in range(steps):
            logits, state = self._next_logits(features[:, :t + 1], tokens, state)
            logits[:, PAD_ID] = logits[:, BOS_ID] = -float("inf")
            nxt = logits.argmax(-1) if greedy else torch.distributions.Categorical(logits=logits / temperature).sample()
            nxt = torch.where(finished, torch.full_like(nxt, PAD_ID), nxt)
            out.append(nxt)
            finished |= nxt == EOS_ID
            if finished.all():
                break
            tokens = torch.cat([tokens, nxt.unsqueeze(1)], dim=1)
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def sample_prior(self, num: int, greedy: bool = True, max_len: int = 40, temperature: float = 1.0) -> torch.Tensor:
        z = torch.randn(num, self.config.latent_dim, device=self.aux_classifier.weight.device)
        return self.decode(z, greedy, max_len, temperature)
