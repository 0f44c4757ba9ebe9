"""What a user asks of a trained model, in the data's own terms: sentences (tokenised as at preparation) or frames
(in the data's units) in, sentences, frames, latent codes and scores out. The MLflow model, the Ray Serve service
and the batch scorer all answer through `ModelOperations`, so each operation behaves the same everywhere.

Every refusal is a `RequestError`: one line a client can act on (a service answers it with a 4xx)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipelines.errors import SeqlvmError
from seqlvm import generate
from seqlvm.checkpoint import LoadedModel
from seqlvm.evaluation import sequence_scores
from seqlvm.models import FrameModel, TextModel

OPERATIONS = ("sample", "reconstruct", "encode", "interpolate", "score")
# The options of the operations, with their defaults: the same in the service and the MLflow model.
DEFAULT_OPTIONS = {"temperature": 1.0, "greedy": False, "seed": 0, "max_len": 40, "samples": 100,
                   "unknown": "refuse"}


class RequestError(SeqlvmError):
    """A request the model cannot answer as asked: bad or missing inputs, limits passed, an operation the model
    does not have."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""
    max_inputs: int = 256  # sentences or sequences
    max_samples: int = 1000  # importance samples of a score
    max_len: int = 200  # tokens decoded per sentence
    max_steps: int = 5000  # frames per input or sample
    max_interpolation_steps: int = 50


class ModelOperations:
    """A loaded model's operations. Text models take `sentences`; frame models take `frames` (each a list of
    frames of the data's frame size, in its units) or, to sample, a number of `steps`."""

    def __init__(self, loaded: LoadedModel, limits: Limits = Limits(), device: str | torch.device = "cpu"):
        self.loaded, self.model, self.data, self.limits = loaded, loaded.model, loaded.data, limits
        self.device = torch.device(device)
        self.model.to(self.device)

    @property
    def is_text(self) -> bool:
        return self.data.is_text

    def available(self) -> tuple[str, ...]:
        """The operations this model has: encode, reconstruct and interpolate need a global latent."""
        if self.model.has_global_latent:
            return OPERATIONS
        return ("sample", "score")

    # Inputs
    def sequences(self, inputs: list, unknown: str = "refuse") -> list[np.ndarray]:
        """A request's inputs as the model's sequences: token ids of sentences, or standardised frames. With
        `unknown="refuse"` a sentence with a word outside the vocabulary is refused, naming the words;
        `unknown="map"` reads them as <unk>, as preparation did."""
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise RequestError(f"no {'sentences' if self.is_text else 'frames'} given")
        if len(inputs) > self.limits.max_inputs:
            raise RequestError(f"{len(inputs)} inputs: at most {self.limits.max_inputs} a request")
        if self.is_text:
            return [self._sentence(sentence, unknown) for sentence in inputs]
        return [self._frames(index, frames) for index, frames in enumerate(inputs)]

    def _sentence(self, sentence, unknown: str) -> np.ndarray:
        if not isinstance(sentence, str):
            raise RequestError(f"a sentence must be a string, not {type(sentence).__name__}")
        if unknown not in ("refuse", "map"):
            raise RequestError(f"unknown={unknown!r}: use 'refuse' or 'map'")
        if not self.data.tokens(sentence):
            raise RequestError(f"empty sentence: {sentence!r}")
        missing = self.data.unknown_words(sentence) if unknown == "refuse" else []
        if missing:
            raise RequestError(f"{len(missing)} word(s) outside the model's vocabulary in {sentence[:80]!r}: "
                               f"{', '.join(missing[:10])} (send unknown='map' to read them as <unk>)")
        ids = self.data.encode_sentences([sentence])[0]
        if len(ids) > self.limits.max_len:
            raise RequestError(f"a sentence of {len(ids)} tokens: at most {self.limits.max_len}")
        return ids

    def _frames(self, index: int, frames) -> np.ndarray:
        try:
            array = self.data.standardised(frames)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"frames[{index}]: not a list of frames of {self.data.frame_dim} numbers "
                               f"({str(exc).splitlines()[0]})") from None
        except SeqlvmError as exc:
            raise RequestError(f"frames[{index}]: {exc}") from None
        if not 0 < len(array) <= self.limits.max_steps:
            raise RequestError(f"frames[{index}] has {len(array)} steps: between 1 and {self.limits.max_steps}")
        return array

    def _needs_latent(self, operation: str) -> None:
        if operation not in self.available():
            raise RequestError(f"model {self.model.name!r} has no global latent: it cannot {operation}; it can "
                               f"{' and '.join(self.available())}")

    def _count(self, name: str, value, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise RequestError(f"{name}={value!r}: an integer from {low} to {high}")
        return value

    # Operations
    @torch.no_grad()
    def sample(self, n: int = 1, temperature: float = 1.0, greedy: bool = False, seed: int = 0,
               max_len: int = 40, steps: int | None = None) -> list:
        """n samples from the prior: sentences, or sequences of `steps` frames (default: the training data's mean
        length) in the data's units."""
        n = self._count("n", n, 1, self.limits.max_inputs)
        torch.manual_seed(int(seed))
        if isinstance(self.model, TextModel):
            if not isinstance(temperature, (int, float)) or not temperature > 0:
                raise RequestError(f"temperature={temperature!r}: a number above 0")
            max_len = self._count("max_len", max_len, 1, self.limits.max_len)
            return generate.from_prior(self.model, self.data, n, greedy=bool(greedy), max_len=max_len,
                                       temperature=float(temperature))
        steps = self._count("steps", steps if steps is not None else self.data.mean_steps or 100, 1,
                            self.limits.max_steps)
        assert isinstance(self.model, FrameModel)
        frames = self.model.sample_prior(n, steps=steps).cpu().numpy()
        return [self.data.in_data_units(sequence) for sequence in frames]

    @torch.no_grad()
    def reconstruct(self, inputs: list, max_len: int = 40, unknown: str = "refuse") -> list[str]:
        """Greedy decodes of each sentence's posterior mean."""
        self._needs_latent("reconstruct")
        mu, _ = self._encode(inputs, unknown)
        max_len = self._count("max_len", max_len, 1, self.limits.max_len)
        return [self.data.text(row) for row in self.model.decode(mu, max_len=max_len)]

    @torch.no_grad()
    def encode(self, inputs: list, unknown: str = "refuse") -> tuple[np.ndarray, np.ndarray]:
        """Each input's posterior q(z|x): (mean, variance), each (N, latent)."""
        self._needs_latent("encode")
        mu, logvar = self._encode(inputs, unknown)
        return mu.cpu().numpy(), logvar.exp().cpu().numpy()

    @torch.no_grad()
    def interpolate(self, first, second, steps: int = 7, max_len: int = 40, unknown: str = "refuse") -> list[str]:
        """Greedy decodes along the straight line between two inputs' posterior means (a homotopy)."""
        self._needs_latent("interpolate")
        steps = self._count("steps", steps, 2, self.limits.max_interpolation_steps)
        max_len = self._count("max_len", max_len, 1, self.limits.max_len)
        mu, _ = self._encode([first, second], unknown)
        t = torch.linspace(0, 1, steps, device=mu.device).unsqueeze(1)
        return [self.data.text(row) for row in self.model.decode((1 - t) * mu[0] + t * mu[1], max_len=max_len)]

    def _encode(self, inputs: list, unknown: str) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self._batch(self.sequences(inputs, unknown))
        return self.model.encode(batch)

    def _batch(self, sequences: list[np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.data.layout.collate(sequences).items()}

    def score(self, inputs: list, samples: int = 100, seed: int = 0, unknown: str = "refuse") -> dict[str, list]:
        """Each input's ELBO and importance-weighted log-likelihood (nats, and per step), with `samples`
        importance samples."""
        samples = self._count("samples", samples, 1, self.limits.max_samples)
        return self.score_sequences(self.sequences(inputs, unknown), samples, seed)

    @torch.no_grad()
    def score_sequences(self, sequences: list[np.ndarray], samples: int, seed: int = 0) -> dict[str, list]:
        """Scores of sequences already encoded (a prepared corpus's rows): columns of plain values, one row a
        sequence, in order."""
        torch.manual_seed(int(seed))
        scores = sequence_scores(self.model, self._batch(sequences), samples)
        steps = scores["steps"]
        columns = {"elbo": scores["elbo"], "iw_ll": scores["iw_ll"], "steps": steps,
                   "elbo_per_step": scores["elbo"] / steps, "iw_ll_per_step": scores["iw_ll"] / steps}
        if "kl" in scores:
            columns["kl"] = scores["kl"]
        out = {name: [float(v) for v in values.cpu()] for name, values in columns.items()}
        out["steps"] = [int(v) for v in out["steps"]]
        if "posterior_mean" in scores:
            out["posterior_mean"] = scores["posterior_mean"].cpu().numpy().tolist()
        out["samples"] = [samples if self.model.has_latent else 1] * len(sequences)
        return out
