"""The metrics of the word-generation task (Schmidt & Hofmann 2018, Section 4), on a dataset of
`pipelines.words.prepare_words`:

- cross-entropy to the train and test word distributions over the word types w of the dataset,
      H[P_split, P-hat] = - sum_w P_split(w) log P-hat(w),
  with log P-hat(w) exact for a model without a latent (the RNN LM) and, for a latent model, the importance-weighted
  estimate log (1/K) sum_k p(w, z_k) / q(z_k | w) (Eq. 12 estimates the same marginal with z_k from the prior).
  Its expectation is at most log P-hat(w) (Jensen), so the estimated cross-entropy is an upper bound in expectation.
  Unit: nats. The paper does not name it, but its ORACLE-TRAIN row (7.0; a test entropy of 6.80) is the unigram
  entropy of its 143K English words, about 10 bits = 7 nats (the 20K wordfreq types here: 7.06 nats).
- the share of generated words that are in the training vocabulary V (types with p_train > 0), "w in V", and the
  share that are in V and distinct, "w in V unique": |distinct generated words in V| / |generated words|. The paper's
  ORACLE-TRAIN row (1.0 and 0.27) fixes this denominator: over the distinct words the oracle would score 1.0.
- the mean over steps of the mutual information I(t) = I(w_t; xi_t | h_{t-1}) (Eq. 13), from a model's
  `mutual_information`, when it declares one (`has_mutual_information`).
"""
from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipelines.dataset import PreparedDataset
from pipelines.stream import collate
from pipelines.vocab import Vocab
from pipelines.words import read_words
from seqlvm.evaluation import importance_weighted_nll
from seqlvm.models.base import TextModel


def nats_to_bits(nats: float) -> float:
    return nats / math.log(2)


def word_batches(vocab: Vocab, words: list[str], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Text batches of single words, one character a token."""
    for start in range(0, len(words), batch_size):
        yield collate(np.asarray(vocab.encode(list(w)), dtype=np.int64) for w in words[start:start + batch_size])


@torch.no_grad()
def word_log_probs(model: TextModel, vocab: Vocab, words: list[str], num_samples: int = 100,
                   batch_size: int = 256) -> torch.Tensor:
    """(len(words),) float64 log P-hat(w): exact without a latent, else the importance-weighted estimate with
    `num_samples` samples. Words are batched by length (less padding), the result is in the order given."""
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(words)), key=lambda i: len(words[i]))
    estimates = []
    for batch in word_batches(vocab, [words[i] for i in order], batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        estimates.append(-importance_weighted_nll(model, batch, num_samples).double().cpu())
    log_probs = torch.empty(len(words), dtype=torch.float64)
    log_probs[torch.tensor(order, dtype=torch.long)] = torch.cat(estimates)
    return log_probs


def cross_entropy(log_probs: torch.Tensor, probs) -> float:
    """H[p, q] = -sum_w p(w) log q(w) in nats, over the words with p(w) > 0 (0 log 0 = 0)."""
    probs = torch.from_numpy(np.array(probs, dtype=np.float64))  # a writable copy (Arrow's arrays are not)
    support = probs > 0
    return float(-(probs[support] * log_probs.double()[support]).sum())


def in_vocabulary(samples: list[str], vocabulary: Collection[str]) -> dict[str, float]:
    """The shares of the generated words that are in the vocabulary ("in_vocab") and that are in it and distinct
    ("in_vocab_unique"; over all generated words, as the paper's oracle row implies)."""
    if not samples:
        raise ValueError("no generated words")
    known = set(vocabulary)
    inside = [s for s in samples if s in known]
    return {"in_vocab": len(inside) / len(samples), "in_vocab_unique": len(set(inside)) / len(samples)}


@torch.no_grad()
def generate_words(model: TextModel, vocab: Vocab, num: int, max_len: int, greedy: bool = False,
                   temperature: float = 1.0, batch_size: int = 1000) -> list[str]:
    """`num` words sampled from the model, as strings (characters up to </s>)."""
    model.eval()
    words = []
    for start in range(0, num, batch_size):
        rows = model.sample_prior(min(batch_size, num - start), greedy=greedy, max_len=max_len,
                                  temperature=temperature)
        words.extend("".join(vocab.decode(row)) for row in rows.cpu())
    return words


def read_word_distributions(data_dir: str | Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(words, p_train, p_test) of a words dataset."""
    table = read_words(data_dir)
    return (table.column("word").to_pylist(), table.column("p_train").to_numpy(),
            table.column("p_test").to_numpy())


def distribution_metrics(log_probs: torch.Tensor, samples: list[str], words: list[str], p_train: np.ndarray,
                         p_test: np.ndarray) -> dict[str, float]:
    """Cross-entropies (nats, and bits), the model's total probability on the words, and the in-vocabulary shares
    of its samples."""
    metrics = {"xent_train": cross_entropy(log_probs, p_train), "xent_test": cross_entropy(log_probs, p_test)}
    metrics.update({f"{key}_bits": nats_to_bits(value) for key, value in list(metrics.items())})
    metrics["mass_on_words"] = float(log_probs.exp().sum())
    metrics.update(in_vocabulary(samples, [w for w, p in zip(words, p_train) if p > 0]))
    return metrics


def word_task_metrics(model: TextModel, dataset: PreparedDataset, num_samples: int = 100, num_generated: int = 10000,
                      greedy: bool = False, temperature: float = 1.0, batch_size: int = 256,
                      mi_options: dict | None = None) -> dict[str, float]:
    """Every metric of Table 1 for `model` on a words dataset: `distribution_metrics` with
    `num_generated` sampled words, and the mean mutual information `mutual_information(**mi_options)` when the
    model has one."""
    words, p_train, p_test = read_word_distributions(dataset.location)
    vocab = dataset.vocab
    log_probs = word_log_probs(model, vocab, words, num_samples, batch_size)
    max_len = dataset.options["max_length"] + 1  # + </s>: a cut-off sample is out of V anyway
    samples = generate_words(model, vocab, num_generated, max_len, greedy, temperature)
    metrics = distribution_metrics(log_probs, samples, words, p_train, p_test)
    if model.has_mutual_information:
        metrics["mutual_information"] = float(model.mutual_information(**(mi_options or {})).mean())
    return metrics


def oracle_train_metrics(data_dir: str | Path, num_generated: int = 10000, seed: int = 0) -> dict[str, float]:
    """Table 1's ORACLE-TRAIN: the training distribution itself as the model (P-hat = P_train), sampled from."""
    words, p_train, p_test = read_word_distributions(data_dir)
    with np.errstate(divide="ignore"):  # log 0 for test-only words: an infinite test cross-entropy
        log_probs = torch.from_numpy(np.log(p_train))
    samples = np.random.default_rng(seed).choice(len(words), size=num_generated, p=p_train)
    return distribution_metrics(log_probs, [words[i] for i in samples], words, p_train, p_test)
