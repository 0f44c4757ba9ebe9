"""Shared evaluation: ELBO and its parts, the importance-weighted NLL, perplexity and active units.

Totals are sums over sequences (so workers can all-reduce them); "steps" counts tokens of text and time steps
of frames. `summarize` turns them into per-sequence and per-step figures. Perplexities are per token, counting
the end-of-sentence token as PTB does; the music and speech tables of the papers report log-likelihoods per time
step instead (`elbo_per_step`, `iw_ll_per_step`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterable

import torch

from seqlvm.latent_use import DecodeSample, active_units, mutual_information
from seqlvm.models.base import SequenceModel, TextModel

TOTAL_KEYS = ("recon", "kl", "sequences", "steps")


def summarize(totals: dict[str, float], prefix: str = "") -> dict[str, float]:
    n, steps = max(totals["sequences"], 1.0), max(totals["steps"], 1.0)
    nll_bound = (totals["recon"] + totals["kl"]) / n
    metrics = {"elbo": -nll_bound, "recon": totals["recon"] / n, "kl": totals["kl"] / n,
               "nll_bound": nll_bound, "ppl_bound": math.exp(min(nll_bound * n / steps, 50.0)),
               "elbo_per_step": -nll_bound * n / steps}
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def add_totals(acc: dict[str, float], totals: dict[str, torch.Tensor]) -> None:
    for key in TOTAL_KEYS:
        acc[key] = acc.get(key, 0.0) + float(totals[key])


# Added to the objective of a collapsed model: larger than any NLL bound the corpora here produce, so a collapsed
# model ranks below every model that uses its latent.
COLLAPSE_PENALTY = 1000.0


@dataclass(frozen=True)
class CollapseGuard:
    """When a model counts as ignoring its latent (posterior collapse): its validation KL, mutual information
    I(x; z) or active units below a minimum, or, for a sentence latent, greedy decodes of its posterior means
    that are too rarely distinct (`decode_distinct`) or no closer to their own input than to another's
    (`decode_f1_gain`, unigram F1 against the input minus F1 against another input). A minimum of 0 checks
    nothing; a figure the model does not report (a model without a global latent has no mutual information) is
    not checked."""
    min_kl: float = 0.0
    min_mutual_info: float = 0.0
    min_active_units: int = 0
    min_decode_distinct: float = 0.0
    min_decode_f1_gain: float = 0.0

    @classmethod
    def of(cls, train_config) -> "CollapseGuard":
        return cls(**{name: getattr(train_config, name) for name in GUARD_FIELDS})

    def collapse(self, metrics: dict[str, float]) -> str | None:
        """Why a split's metrics say the latent is unused, in a few words, or None."""
        measured = with_f1_gain(metrics)
        for name, minimum, says in GUARD_CHECKS:
            value = measured.get(name)
            if getattr(self, minimum) and value is not None and value < getattr(self, minimum):
                return says.format(value=value, minimum=getattr(self, minimum))
        return None

    def objective(self, nll_bound: float, metrics: dict[str, float]) -> float:
        """What a sweep minimises: the validation NLL bound, plus COLLAPSE_PENALTY when the latent is unused (a
        model that ignores z must not win a search for a useful latent space)."""
        return nll_bound + (COLLAPSE_PENALTY if self.collapse(metrics) else 0.0)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        checks = [f"{name.removeprefix('min_').replace('_', ' ')} >= {value:g}"
                  for name, value in self.to_dict().items() if value]
        return ", ".join(checks) if checks else "off"


GUARD_FIELDS = tuple(f.name for f in dataclasses.fields(CollapseGuard))
# (metric, the guard's minimum for it, why a model under it counts as ignoring z)
GUARD_CHECKS = (
    ("kl", "min_kl", "KL {value:.3g} nats < {minimum:g}"),
    ("mutual_info", "min_mutual_info", "mutual information {value:.3g} nats < {minimum:g}"),
    ("active_units", "min_active_units", "{value:.0f} active units < {minimum:g}"),
    ("decode_distinct", "min_decode_distinct",
     "its posterior decodes are nearly all alike: {value:.1%} distinct < {minimum:.0%}"),
    ("decode_f1_gain", "min_decode_f1_gain",
     "its posterior decodes are no closer to their own input than to another's: unigram F1 gain "
     "{value:.3f} < {minimum:g}"),
)


def with_f1_gain(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics with `decode_f1_gain` (F1 against the input minus F1 against another input) when they have
    both F1s: versions registered before it was measured carry only those."""
    if "decode_f1_gain" in metrics or not {"decode_f1", "decode_f1_shuffled"} <= set(metrics):
        return metrics
    return {**metrics, "decode_f1_gain": metrics["decode_f1"] - metrics["decode_f1_shuffled"]}


LOGITS_BUDGET_BYTES = 256 * 2**20


# Bytes a frame model holds per time step and importance sample: states, features and head parameters, in
# float32, for the sizes used here (an estimate: the point is to keep chunks well inside memory).
FRAME_STEP_BYTES = 16 * 1024


def samples_per_chunk(model: SequenceModel, batch: dict, budget_bytes: int = LOGITS_BUDGET_BYTES) -> int:
    """How many importance samples to decode at once so one chunk's logits (text) or per-step state (frames),
    for every particle of a sample, stays within the budget."""
    if isinstance(model, TextModel):
        sample_bytes = batch["targets"].numel() * model.vocab_size * 4
    else:
        sample_bytes = batch["frames"].shape[0] * batch["frames"].shape[1] * FRAME_STEP_BYTES
    return max(1, budget_bytes // max(1, sample_bytes * model.particles_per_sample))


def importance_weighted_nll(model: SequenceModel, batch: dict, num_samples: int,
                            chunk: int | None = None) -> torch.Tensor:
    """-log p(x) estimated as -log (1/K) sum_k p(x, z_k) / q(z_k | x), per sentence; K samples drawn in chunks
    (by default sized to a fixed logits memory budget). Never looser than the ELBO in expectation
    (Burda et al., 2016)."""
    if not model.has_latent:
        return -model.log_importance_weights(batch, 1)[0]
    chunk = chunk or samples_per_chunk(model, batch)
    log_w = torch.cat([model.log_importance_weights(batch, min(chunk, num_samples - start))
                       for start in range(0, num_samples, chunk)])
    return -(torch.logsumexp(log_w, dim=0) - math.log(num_samples))


@torch.no_grad()
def evaluate(model: SequenceModel, batches: Iterable[dict], iw_samples: int = 0, chunk: int | None = None,
             device: str | torch.device = "cpu", decode_limit: int = 0) -> dict[str, float]:
    """ELBO terms, NLL bound and perplexity over the batches; with iw_samples > 0 also the importance-weighted
    NLL and perplexity; with a global latent, its use: mutual information, active units and, for up to
    `decode_limit` sentences, the posterior decodes' metrics (`seqlvm.latent_use`). Counts are named as the
    data's: sentences and tokens of text, sequences and steps of frames."""
    model.eval()
    totals: dict[str, float] = {}
    sample = decode_sample(model, decode_limit)
    iw_total, posteriors = 0.0, LatentPosteriors(model)
    for batch in batches:  # streamed: a progress bar wrapping `batches` follows the evaluation
        batch = {k: v.to(device) for k, v in batch.items()}
        add_totals(totals, model(batch).totals)
        if iw_samples:
            iw_total += float(importance_weighted_nll(model, batch, iw_samples, chunk).sum())
        mu = posteriors.add(batch)
        if sample is not None:  # decoded after the pass
            sample.offer(mu, batch["targets"])
    if not totals:
        raise ValueError("no batches to evaluate")
    metrics = summarize(totals)
    counted = ("sentences", "tokens") if isinstance(model, TextModel) else ("sequences", "steps")
    metrics.update({counted[0]: totals["sequences"], counted[1]: totals["steps"]})
    if iw_samples:
        metrics.update(iw_metrics(-iw_total, totals["sequences"], totals["steps"]))
    metrics.update(posteriors.metrics())
    if sample is not None:
        metrics.update(sample.decode(model).metrics())
    return metrics


def iw_metrics(log_likelihood: float, sequences: float, steps: float) -> dict[str, float]:
    """A split's importance-weighted NLL (per sequence), perplexity and log-likelihood per step, from the sum of its
    sequences' importance-weighted log-likelihoods and their counts."""
    sequences, steps = max(sequences, 1.0), max(steps, 1.0)
    return {"iw_nll": -log_likelihood / sequences, "iw_ppl": math.exp(min(-log_likelihood / steps, 50.0)),
            "iw_ll_per_step": log_likelihood / steps}


def decode_sample(model: SequenceModel, limit: int) -> DecodeSample | None:
    """A sample of up to `limit` sentences to decode from their posterior means, for a model with a sentence latent
    (None for other models, or with limit 0)."""
    if limit and isinstance(model, TextModel) and model.has_global_latent:
        return DecodeSample(limit)
    return None


class LatentPosteriors:
    """The posteriors q(z|x) of a model's global latent over the batches it is shown: its mutual information and
    active units (0 before any batch, so DDP workers always reduce the same keys). Nothing for a model without
    one."""

    def __init__(self, model: SequenceModel):
        self.model = model
        self.mu: list[torch.Tensor] = []
        self.logvar: list[torch.Tensor] = []

    def add(self, batch: dict) -> torch.Tensor | None:
        """Encode the batch; its posterior means (B, latent), or None without a global latent."""
        if not self.model.has_global_latent:
            return None
        mu, logvar = self.model.encode(batch)
        self.mu.append(mu.float().cpu())
        self.logvar.append(logvar.float().cpu())
        return mu

    def metrics(self) -> dict[str, float]:
        if not self.model.has_global_latent:
            return {}
        if not self.mu:
            return {"mutual_info": 0.0, "active_units": 0.0}
        mu, logvar = torch.cat(self.mu), torch.cat(self.logvar)
        return {"mutual_info": mutual_information(mu, logvar), "active_units": active_units(mu)}


@torch.no_grad()
def sequence_scores(model: SequenceModel, batch: dict, num_samples: int, chunk: int | None = None
                    ) -> dict[str, torch.Tensor]:
    """Each sequence's scores, (B,) tensors: `elbo` (the mean of its K log importance weights: the ELBO,
    estimated with K samples), `iw_ll` (log (1/K) sum_k w_k: the importance-weighted log-likelihood), `steps`
    (what per-step figures divide by: tokens with </s>, or time steps) and, with a global latent, `kl` (its
    Gaussian posterior's KL from the N(0, I) prior) and `posterior_mean` (B, latent). A model without a latent
    has one exact weight: both scores are log p(x)."""
    model.eval()
    samples = num_samples if model.has_latent else 1
    chunk = chunk or samples_per_chunk(model, batch)
    log_w = torch.cat([model.log_importance_weights(batch, min(chunk, samples - start))
                       for start in range(0, samples, chunk)])
    scores = {"elbo": log_w.mean(0), "iw_ll": torch.logsumexp(log_w, dim=0) - math.log(samples),
              "steps": batch["lengths"].float()}
    if model.has_global_latent:
        mu, logvar = model.encode(batch)
        scores["kl"] = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        scores["posterior_mean"] = mu
    return scores
