"""Paper 000's excerpt of Miao, Yu & Blunsom 2016 (NVDM), Table 1a: document perplexity. NVDM with the paper's 50-
and 200-dimensional latents, and a unigram model fitted to the same training words (NVDM with h ignored), on
the speeches of the built-in plays, one document a speech. The paper's numbers are on 20News and RCV1-v2: every
line is indicative.

Perplexity is the paper's, exp(-(1/D) sum_d log p(X_d) / N_d), with log p(X_d) replaced by its variational bound
(as the paper does) or by an importance-weighted estimate (q as the proposal; tighter)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from pipelines.dataset import PreparedDataset
from pipelines.stream import local_batches
from pipelines.text import TextOptions, prepare_text
from seqlvm.evaluation import importance_weighted_nll
from seqlvm.models import build_model
from seqlvm.reproduction.fit import fit
from seqlvm.reproduction.table import Check, DataFile, Line, PaperTable, Row, RowRun, trend, value
from seqlvm.training import TrainConfig

SOURCE = "builtin:shakespeare"
# One document a speech of 20..400 tokens; the 2,000 most frequent training words, like 20News's vocabulary
# (the rest become <unk>, which NVDM leaves out).
SPEECHES = TextOptions(layout="paragraphs", min_length=20, max_length=400, vocab_size=2000)
UNIGRAM = "unigram"
PAPER = {"NVDM 50": (836, 563), "NVDM 200": (852, 550)}  # Table 1a: test perplexity on (20News, RCV1-v2)
BOUND, IW = "perplexity, bound", "perplexity, IW"
BUDGETS = {  # the encoder of 2 layers of `hidden_dim` units, steps, documents read, samples of h for each measure
    "quick": {"hidden_dim": 64, "steps": 1500, "train_limit": None, "test_limit": None, "bound_samples": 5,
              "iw_samples": 5},
    "paper": {"hidden_dim": 500, "steps": 2000, "train_limit": None, "test_limit": None, "bound_samples": 5,
              "iw_samples": 50},
}


def rows(budget: str, data_root: Path | None, data_dir: Path) -> list[Row]:
    folder = data_dir / "shakespeare-speeches"
    manifest = prepare_text(SOURCE, folder, SPEECHES)
    data = DataFile(f"{SOURCE}, speeches as documents", str(folder), manifest["fingerprint"])
    common = {**BUDGETS[budget], "batch_size": 64, "lr": 2e-3, "seed": 0}  # the paper's Adam and batch of 64
    return [Row("nvdm", UNIGRAM, common, data),
            *(Row("nvdm", name, {**common, "latent_dim": int(name.split()[1])}, data) for name in PAPER)]


def run(row: Row, work: RowRun) -> list[Line]:
    settings, dataset = row.settings, PreparedDataset.open(row.data.path)
    train = dataset.read("train", settings["train_limit"])
    test = dataset.read("test", settings["test_limit"])
    torch.manual_seed(settings["seed"])
    # The unigram's row builds an NVDM too, for the words it counts: those NVDM models (no specials, no <unk>).
    model = build_model("nvdm", {"hidden_dim": settings["hidden_dim"], "encoder_layers": 2,
                                 "latent_dim": settings.get("latent_dim", 50)}, len(dataset.vocab))
    log_p = unigram_log_probs(model, train, settings["batch_size"])
    if row.name == UNIGRAM:
        return unigram_lines(model, log_p, test, settings)
    return nvdm_lines(row.name, model, log_p, train, test, settings, work)


def unigram_lines(model, log_p: torch.Tensor, test: list[np.ndarray], settings: dict) -> list[Line]:
    nll, words = unigram_scores(model, log_p, test, settings["batch_size"])
    basis = "the paper has no unigram; a unigram's bound is its exact likelihood"
    return [Line(UNIGRAM, metric, per_document_perplexity(nll, words), None, False, basis) for metric in (BOUND, IW)]


def nvdm_lines(name: str, model, log_p: torch.Tensor, train: list[np.ndarray], test: list[np.ndarray],
               settings: dict, work: RowRun) -> list[Line]:
    # Ours, not the paper's: b starts at the unigram log-frequencies, so training starts from the unigram model;
    # Adam moves b by about lr a step, too slowly for a few hundred steps to get from 0 to log p(w) ~ -8.
    with torch.no_grad():
        model.decoder.bias.copy_(log_p)
    cfg = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], seed=settings["seed"],
                      log_every=max(1, settings["steps"] // 10), kl_anneal="constant", kl_weight=1.0)
    fit(model, train, cfg, settings["steps"], work)
    torch.manual_seed(settings["seed"])
    scores = nvdm_scores(model, test, settings)
    news, rcv = PAPER[name]
    basis = f"the paper's is on 20News (RCV1-v2: {rcv}), ours on Shakespeare's speeches"
    return [Line(name, BOUND, per_document_perplexity(scores["bound"], scores["words"]), news, False, basis),
            Line(name, IW, per_document_perplexity(scores["iw"], scores["words"]), None, False,
                 "the paper gives the bound's only; ours on Shakespeare's speeches")]


def word_counts(model, documents: list[np.ndarray], batch_size: int) -> torch.Tensor:
    """(D, words) counts of the words NVDM models, one row a document (in batching order)."""
    return torch.cat([model.word_counts(batch) for batch in local_batches(documents, batch_size)])


def unigram_log_probs(model, train: list[np.ndarray], batch_size: int) -> torch.Tensor:
    """log p(w) of each modelled word: its add-one smoothed frequency in the training documents (a subset of them
    need not hold every word)."""
    frequencies = word_counts(model, train, batch_size).sum(0) + 1
    return (frequencies / frequencies.sum()).log()


def unigram_scores(model, log_p: torch.Tensor, test: list[np.ndarray], batch_size: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per test document: -log p(X_d) under the unigram model, and N_d."""
    counts = word_counts(model, test, batch_size)
    return -(counts * log_p).sum(-1).numpy(), counts.sum(-1).numpy()


@torch.no_grad()
def nvdm_scores(model, test: list[np.ndarray], settings: dict) -> dict[str, np.ndarray]:
    """Per test document: the bound's -ELBO (its mean over `bound_samples` draws of h), the importance-weighted
    -log p(X_d), and N_d."""
    model.eval()
    bound, iw, words = [], [], []
    for batch in local_batches(test, settings["batch_size"]):
        draws = [model.document_terms(batch) for _ in range(settings["bound_samples"])]
        bound.append(torch.stack([terms["recon"] + terms["kl"] for terms in draws]).mean(0))
        iw.append(importance_weighted_nll(model, batch, settings["iw_samples"]))
        words.append(draws[0]["words"])
    return {"bound": torch.cat(bound).numpy(), "iw": torch.cat(iw).numpy(), "words": torch.cat(words).numpy()}


def per_document_perplexity(nll: np.ndarray, words: np.ndarray) -> float:
    """exp of the mean over documents of -log p(X_d) / N_d; documents with no modelled word are skipped."""
    kept = words > 0
    return math.exp(float(np.mean(nll[kept] / words[kept])))


def checks(lines: list[Line]) -> list[Check]:
    return [trend(f"{name} has a lower perplexity (bound) than the unigram model",
                  {name: value(lines, name, BOUND), UNIGRAM: value(lines, UNIGRAM, BOUND)},
                  lambda nvdm, unigram: nvdm < unigram) for name in PAPER]


TABLE = PaperTable(
    key="nvdm", paper="000 (excerpt) Miao, Yu & Blunsom 2016, Table 1a",
    title="Document perplexity: NVDM 50 and 200 against a unigram model",
    rows=rows, run=run, checks=checks,
    paper_cost="2 NVDMs of 2,000 steps on 12,653 speeches and a unigram: about 5 minutes on one CPU core")
