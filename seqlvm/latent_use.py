"""Whether a model uses its latent, measured as the field does: the mutual information I(x; z) under q (He et al.
2019), active units (Burda et al. 2016), and, for a sentence latent, how well greedy decodes of each sentence's
posterior mean reconstruct it (unigram F1 and BLEU-4 against the input, the share of distinct decodes).

A decoder that ignores z decodes every sentence alike: its decodes are few and distinct, and their overlap with
their own input is no better than with another sentence's, which `decode_f1_shuffled` measures.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID
from seqlvm.objectives import LOG_2PI

ACTIVITY_THRESHOLD = 0.01


def active_units(means: torch.Tensor, threshold: float = ACTIVITY_THRESHOLD) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z]) > threshold (Burda et al.)."""
    if means.size(0) < 2:
        return 0
    return int((means.var(dim=0) > threshold).sum())


@torch.no_grad()
def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 256) -> float:
    """I(x; z) in nats under q(z|x) p(x), from N posteriors (mu, logvar), each (N, latent):
    E_x[E_q(z|x) log q(z|x)] - E_q(z) log q(z), with the aggregate posterior q(z) the mixture of all N posteriors
    and one z drawn from each (He et al. 2019, pooled over the whole split instead of averaged over batches).
    At most log N."""
    n, dims = mu.shape
    if n < 2:
        return 0.0
    mu, logvar = mu.double(), logvar.double()
    neg_entropy = (-0.5 * dims * LOG_2PI - 0.5 * (1.0 + logvar).sum(-1)).mean()
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    precision = (-logvar).exp()
    log_qz = []
    for start in range(0, n, chunk):
        diff = z[start:start + chunk, None, :] - mu[None]  # (chunk, N, latent)
        log_density = -0.5 * (dims * LOG_2PI + logvar.sum(-1)[None] + (diff.pow(2) * precision[None]).sum(-1))
        log_qz.append(torch.logsumexp(log_density, dim=1) - math.log(n))
    return float(neg_entropy - torch.cat(log_qz).mean())


def words_of(row: list[int]) -> list[int]:
    """A sentence's token ids up to its </s>, without padding or <s>."""
    words = []
    for token in row:
        if token == EOS_ID:
            break
        if token not in (PAD_ID, BOS_ID):
            words.append(token)
    return words


def unigram_f1(hypothesis: list[int], reference: list[int]) -> float:
    """F1 of the words two sentences share, each word counted at most as often as it occurs in both."""
    overlap = sum((Counter(hypothesis) & Counter(reference)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(hypothesis), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def corpus_bleu(hypotheses: list[list[int]], references: list[list[int]], max_order: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002) in [0, 100]: the geometric mean of clipped 1..4-gram precisions over
    the corpus, times the brevity penalty; one reference per hypothesis, no smoothing."""
    matches, totals = [0] * max_order, [0] * max_order
    hypothesis_length = reference_length = 0
    for hypothesis, reference in zip(hypotheses, references):
        hypothesis_length += len(hypothesis)
        reference_length += len(reference)
        for order in range(1, max_order + 1):
            hyp_ngrams = Counter(tuple(hypothesis[i:i + order]) for i in range(len(hypothesis) - order + 1))
            ref_ngrams = Counter(tuple(reference[i:i + order]) for i in range(len(reference) - order + 1))
            matches[order - 1] += sum((hyp_ngrams & ref_ngrams).values())
            totals[order - 1] += sum(hyp_ngrams.values())
    if min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_order
    brevity = min(0.0, 1.0 - reference_length / max(hypothesis_length, 1))
    return 100.0 * math.exp(log_precision + brevity)


@dataclass
class PosteriorDecodes:
    """Greedy decodes of sentences' posterior means, beside the sentences (token ids, no specials)."""
    decodes: list[list[int]]
    references: list[list[int]]

    def metrics(self, seed: int = 0) -> dict[str, float]:
        """decode_f1 and decode_bleu against the input; decode_f1_shuffled, the same decodes against other
        inputs (what F1 a decoder that ignores z gets), and decode_f1_gain, the difference; decode_distinct, the
        share of distinct decodes. All 0 without sentences."""
        n = len(self.decodes)
        if n == 0:
            return dict.fromkeys(("decode_f1", "decode_f1_shuffled", "decode_f1_gain", "decode_bleu",
                                  "decode_distinct", "decoded_sentences"), 0.0)
        # Each decode paired with another sentence's input: one random cycle through all of them, so none keeps
        # its own.
        order = np.random.default_rng(seed).permutation(n)
        shuffled = np.empty(n, dtype=int)
        shuffled[order] = np.roll(order, -1)
        f1 = float(np.mean([unigram_f1(d, r) for d, r in zip(self.decodes, self.references)]))
        f1_shuffled = float(np.mean([unigram_f1(self.decodes[i], self.references[j]) for i, j in enumerate(shuffled)]))
        return {
            "decode_f1": f1, "decode_f1_shuffled": f1_shuffled, "decode_f1_gain": f1 - f1_shuffled,
            "decode_bleu": corpus_bleu(self.decodes, self.references),
            "decode_distinct": len({tuple(d) for d in self.decodes}) / n,
            "decoded_sentences": float(n),
        }


class DecodeSample:
    """A uniform random sample of up to `limit` sentences of a split, with their posterior means, drawn as the
    batches stream past (reservoir sampling: memory for `limit` sentences, whatever the split's size, and none
    favoured by the order of the batches, which come bucketed by length)."""

    def __init__(self, limit: int, seed: int = 0):
        self.limit, self.seen = limit, 0
        self.rng = np.random.default_rng(seed)
        self.means: list[torch.Tensor] = []
        self.references: list[list[int]] = []

    def offer(self, mu: torch.Tensor, targets: torch.Tensor) -> None:
        """A batch's posterior means (B, latent) and target ids (B, T)."""
        mu, targets = mu.detach().cpu(), targets.tolist()
        for row in range(mu.size(0)):
            self.seen += 1
            if len(self.means) < self.limit:
                self.means.append(mu[row])
                self.references.append(words_of(targets[row]))
                continue
            slot = int(self.rng.integers(self.seen))
            if slot < self.limit:
                self.means[slot], self.references[slot] = mu[row], words_of(targets[row])

    @torch.no_grad()
    def decode(self, model, chunk: int = 64) -> PosteriorDecodes:
        """Greedy decodes of the sampled means, each allowed 5 tokens beyond its sentence's length."""
        device = next(model.parameters()).device
        decodes = []
        for start in range(0, len(self.means), chunk):
            means = torch.stack(self.means[start:start + chunk]).to(device)
            longest = max(len(r) for r in self.references[start:start + chunk])
            decodes += [words_of(row) for row in model.decode(means, greedy=True, max_len=longest + 6).tolist()]
        return PosteriorDecodes(decodes, list(self.references))
