"""Shared evaluation: ELBO and its parts, the importance-weighted NLL, perplexity and active units.

Totals are sums over sequences (so workers can all-reduce them); "steps" counts tokens of text and time steps
of frames. `summarize` turns them into per-sequence and per-step figures. Perplexities are per token, counting
the end-of-sentence token as PTB does; the music and speech tables of the papers report log-likelihoods per time
step instead (`elbo_per_step`, `iw_ll_per_step`).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

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


# Added to the objective of a model whose KL is below the sweep's minimum: larger than any NLL bound the
# corpora here produce, so a collapsed model ranks below every model that uses its latent.
COLLAPSE_PENALTY = 1000.0


def sweep_objective(nll_bound: float, kl: float, min_kl: float = 0.0) -> float:
    """What a sweep minimises: the validation NLL bound, penalised when the KL is under `min_kl` (a model that
    ignores z must not win a search for a useful latent space; Bowman et al. restricted theirs this way)."""
    return nll_bound + (COLLAPSE_PENALTY if kl < min_kl else 0.0)


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


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z]) > threshold (Burda et al.)."""
    if means.size(0) < 2:
        return 0
    return int((means.var(dim=0) > threshold).sum())


@torch.no_grad()
def evaluate(model: SequenceModel, batches: Iterable[dict], iw_samples: int = 0, chunk: int | None = None,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """ELBO terms, NLL bound and perplexity over the batches; with iw_samples > 0 also the importance-weighted
    NLL and perplexity; with a global latent, the number of active units. Counts are named as the data's:
    sentences and tokens of text, sequences and steps of frames."""
    model.eval()
    totals: dict[str, float] = {}
    iw_total, means = 0.0, []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        add_totals(totals, model(batch).totals)
        if iw_samples:
            iw_total += float(importance_weighted_nll(model, batch, iw_samples, chunk).sum())
        if model.has_global_latent:
            means.append(model.encode(batch)[0].cpu())
    if not totals:
        raise ValueError("no batches to evaluate")
    metrics = summarize(totals)
    counted = ("sentences", "tokens") if isinstance(model, TextModel) else ("sequences", "steps")
    metrics.update({counted[0]: totals["sequences"], counted[1]: totals["steps"]})
    if iw_samples:
        metrics["iw_nll"] = iw_total / totals["sequences"]
        metrics["iw_ppl"] = math.exp(min(iw_total / totals["steps"], 50.0))
        metrics["iw_ll_per_step"] = -iw_total / totals["steps"]
    if means:
        metrics["active_units"] = active_units(torch.cat(means))
    return metrics
