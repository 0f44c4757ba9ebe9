"""NVDM document perplexity (Miao et al. 2016, Table 1a) on the built-in Shakespeare corpus: every speech of
the 38 plays is one document. NVDM with the paper's 50- and 200-dimensional latents is trained on the bag of
words of the training speeches and scored on held-out ones, beside a unigram model fitted to the same training
words (NVDM with h ignored) and beside the paper's numbers on 20News and RCV1-v2 (other corpora: no value is
directly comparable; each side is also given relative to its weakest model).

Perplexity two ways: the paper's, exp(-(1/D) sum_d log p(X_d) / N_d), the mean over documents of the per-word
log-likelihood, and seqlvm's, exp(-sum_d log p(X_d) / sum_d N_d), over the whole corpus (what `seqlvm
evaluate` prints). log p(X_d) is replaced by its variational lower bound (as the paper does) or by the
importance-weighted estimate (q as proposal; tighter).

    .venv/bin/python benchmarks/nvdm_docs.py            # full run (about 4 min on 2 shared CPU cores)
    .venv/bin/python benchmarks/nvdm_docs.py --quick    # smoke run (about a minute)
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT
from rich.console import Console
from rich.table import Table

from pipelines.dataset import PreparedDataset
from pipelines.stream import local_batches
from pipelines.text import TextOptions, prepare_text
from pipelines.vocab import Vocab
from seqlvm.evaluation import evaluate, importance_weighted_nll
from seqlvm.models import build_model
from seqlvm.models.nvdm import bag_of_words
from seqlvm.training.local import train_locally
from seqlvm.training.spec import TrainConfig

DEFAULT_DATA = ROOT / "benchmarks" / "out" / "shakespeare-speeches"
# Table 1a, test perplexity (per-document average; NVDM's from the variational bound): (20News, RCV1-v2).
PAPER = {"LDA 50": (1091, 1437), "docNADE 50": (896, 742), "NVDM 50": (836, 563), "NVDM 200": (852, 550)}


def prepare_speeches(data_dir: Path, args, console: Console) -> Vocab:
    """One document a speech of `min_words`..`max_words` tokens; the vocabulary is the most frequent
    `vocab_size` training words (2000 like 20News; the rest become <unk>, which NVDM leaves out)."""
    options = TextOptions(layout="paragraphs", min_length=args.min_words, max_length=args.max_words,
                          vocab_size=args.vocab_size)
    prepare_text("builtin:shakespeare", data_dir, options, console=console)
    return Vocab.load(data_dir / "vocab.json")


def document_counts(documents: list[np.ndarray], word_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(D, words) counts of the modelled words (the columns NVDM predicts), one row a document."""
    rows = [bag_of_words(torch.as_tensor(d, dtype=torch.long)[None], vocab_size)[0, word_ids] for d in documents]
    return torch.stack(rows)


def unigram_log_probs(train_counts: torch.Tensor) -> torch.Tensor:
    """log p(w) of each modelled word: its relative frequency in the training documents, add-one smoothed
    (every vocabulary word occurs in the full training split, not always in a --quick subset of it)."""
    frequencies = train_counts.sum(0) + 1
    return (frequencies / frequencies.sum()).log()


def unigram_scores(log_p: torch.Tensor, test_counts: torch.Tensor) -> dict[str, np.ndarray]:
    """Per test document: -log p(X_d) under the unigram model, and N_d."""
    return {"nll": -(test_counts * log_p).sum(-1).numpy(), "words": test_counts.sum(-1).numpy()}


@torch.no_grad()
def nvdm_scores(model, documents: list[np.ndarray], args) -> dict[str, np.ndarray]:
    """Per test document: the bound's -ELBO (averaged over `bound_samples` draws of h), the importance-weighted
    -log p(X_d), and N_d."""
    model.eval()
    bound, iw, words = [], [], []
    for batch in local_batches(documents, args.batch_size):
        draws = [model.document_terms(batch) for _ in range(args.bound_samples)]
        bound.append(torch.stack([t["recon"] + t["kl"] for t in draws]).mean(0))
        iw.append(importance_weighted_nll(model, batch, args.iw_samples))
        words.append(draws[0]["words"])
    return {"nll": torch.cat(bound).numpy(), "iw_nll": torch.cat(iw).numpy(), "words": torch.cat(words).numpy()}


@torch.no_grad()
def posterior_means(model, documents: list[np.ndarray], args) -> torch.Tensor:
    return torch.cat([model.encode(batch)[0] for batch in local_batches(documents, args.batch_size)])


def perplexities(nll: np.ndarray, words: np.ndarray) -> tuple[float, float]:
    """(the paper's per-document perplexity, the corpus-level one); documents with no modelled word skipped."""
    kept = words > 0
    return math.exp(np.mean(nll[kept] / words[kept])), math.exp(nll[kept].sum() / words[kept].sum())


def top_words(model, vocab: Vocab, means: torch.Tensor, directions: int, k: int = 10) -> list[tuple[int, list[str]]]:
    """The paper's Table 2: for the latent dimensions whose posterior means vary most over the documents, the
    k words with the strongest positive weight in R."""
    ranked = means.var(0).argsort(descending=True)[:directions].tolist()
    weights = model.decoder.weight.detach()  # (words, latent): R transposed
    return [(d, [vocab.words[int(model.word_ids[j])] for j in weights[:, d].topk(k).indices]) for d in ranked]


def train_nvdm(latent_dim: int, args, vocab_size: int, train, unigram: torch.Tensor, console: Console):
    torch.manual_seed(args.seed)
    model = build_model("nvdm", {**args.model, "latent_dim": latent_dim}, vocab_size)
    # Ours, not the paper's: b starts at the unigram log-frequencies, so training starts from the unigram model.
    # Adam moves b by about lr a step, too slowly for a few hundred CPU steps to get from 0 to log p(w) ~ -8.
    with torch.no_grad():
        model.decoder.bias.copy_(unigram)
    cfg = TrainConfig(batch_size=args.batch_size, lr=args.lr, kl_anneal="constant", kl_weight=1.0,
                      log_every=args.log_every, seed=args.seed)
    started = time.time()

    def on_log(step: int, m: dict) -> None:
        console.print(f"NVDM {latent_dim:>3} step {step:>5}/{args.steps} | recon {m['recon']:7.1f} | "
                      f"kl {m['kl']:5.1f} | ppl (bound) {m['ppl_bound']:6.0f} | {time.time() - started:4.0f}s")

    train_locally(model, train, cfg, args.steps, on_log)
    return model, time.time() - started


def _row(scores: dict[str, np.ndarray]) -> dict[str, float]:
    per_doc, corpus = perplexities(scores["nll"], scores["words"])
    iw_per_doc, iw_corpus = perplexities(scores["iw_nll"], scores["words"])
    return {"per_doc": per_doc, "corpus": corpus, "iw_per_doc": iw_per_doc, "iw_corpus": iw_corpus}


def _results_table(results: dict[str, dict], args) -> Table:
    table = Table(title=f"Shakespeare speeches, {args.split} split: perplexity per word "
                        f"(bound: {args.bound_samples} draws of h; IW: {args.iw_samples} importance samples)")
    table.add_column("model")
    for label in ("per-doc (paper's), bound", "per-doc, IW", "corpus, bound", "corpus, IW",
                  "seqlvm evaluate ppl_bound", "KL (nats/doc)", "active units", "train s"):
        table.add_column(label, justify="right")
    for name, r in results.items():
        latent = name != "unigram"
        table.add_row(name, f"{r['per_doc']:.0f}", f"{r['iw_per_doc']:.0f}", f"{r['corpus']:.0f}",
                      f"{r['iw_corpus']:.0f}", f"{r['evaluate_ppl']:.0f}" if latent else "-",
                      f"{r['kl']:.1f}" if latent else "-", str(r["active"]) if latent else "-",
                      f"{r['seconds']:.0f}" if latent else "-")
    return table


def _paper_table(results: dict[str, dict]) -> Table:
    """Our per-document bound perplexities beside Table 1a."""
    table = Table(title="Per-document perplexity (bound) beside Miao et al. (2016), Table 1a; each ratio is to its "
                        "own table's weakest model (our unigram, the paper's LDA 50); the corpora differ")
    for label in ("model", "ours: Shakespeare", "ours / unigram", "paper: 20News", "20News / LDA 50",
                  "paper: RCV1-v2", "RCV1 / LDA 50"):
        table.add_column(label, justify="left" if label == "model" else "right")
    lda_news, lda_rcv = PAPER["LDA 50"]
    for name in dict.fromkeys([*PAPER, *results]):
        ours = results.get(name, {}).get("per_doc")
        news, rcv = PAPER.get(name, (None, None))
        table.add_row(name, f"{ours:.0f}" if ours else "-",
                      f"{ours / results['unigram']['per_doc']:.3f}" if ours else "-",
                      str(news) if news else "-", f"{news / lda_news:.3f}" if news else "-",
                      str(rcv) if rcv else "-", f"{rcv / lda_rcv:.3f}" if rcv else "-")
    return table



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps per model")
    parser.add_argument("--latents", type=int, nargs="+", default=[50, 200], help="latent sizes to train")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="where the speeches are prepared")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--min-words", type=int, default=20, help="shortest speech kept as a document")
    parser.add_argument("--max-words", type=int, default=400, help="longest speech kept as a document")
    parser.add_argument("--iw-samples", type=int, default=50, help="importance samples per document")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam's learning rate (ours: the paper tuned it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (on 2 shared cores, a second thread makes these sizes ~5x slower)")
    parser.add_argument("--quick", action="store_true", help="small encoder, few steps and documents")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # The paper: Adam, batches of 64, a 500-unit encoder.
    args.batch_size, args.bound_samples, args.log_every = 64, 5, 250
    args.model = {"hidden_dim": 500, "encoder_layers": 2}
    train_limit = test_limit = None
    if args.quick:
        args.steps, args.latents, args.iw_samples, args.log_every = min(args.steps, 300), [50], 5, 50
        args.model, train_limit, test_limit = {"hidden_dim": 64, "encoder_layers": 2}, 2000, 300

    console = Console(highlight=False, width=150)
    data_dir = Path(args.data_dir).absolute()
    vocab = prepare_speeches(data_dir, args, console)
    train = PreparedDataset.open(str(data_dir)).read("train", train_limit)
    test = PreparedDataset.open(str(data_dir)).read(args.split, test_limit)

    word_ids = build_model("nvdm", args.model, len(vocab)).word_ids  # the columns every NVDM predicts
    test_counts = document_counts(test, word_ids, len(vocab))
    unigram_log_p = unigram_log_probs(document_counts(train, word_ids, len(vocab)))
    unigram = unigram_scores(unigram_log_p, test_counts)
    console.print(f"data {data_dir}: {len(train):,} training / {len(test):,} {args.split} speeches of "
                  f"{args.min_words}..{args.max_words} tokens, {int(test_counts.sum()):,} {args.split} words in "
                  f"the {len(word_ids):,}-word vocabulary (<unk> left out); encoder {args.model}, batch "
                  f"{args.batch_size}, lr {args.lr}, {args.steps} steps, seed {args.seed}")

    results, topics = {"unigram": _row({**unigram, "iw_nll": unigram["nll"]})}, None
    for latent_dim in args.latents:
        model, seconds = train_nvdm(latent_dim, args, len(vocab), train, unigram_log_p, console)
        torch.manual_seed(args.seed)
        metrics = evaluate(model, local_batches(test, args.batch_size), iw_samples=args.iw_samples)
        scores = nvdm_scores(model, test, args)
        results[f"NVDM {latent_dim}"] = {**_row(scores), "kl": metrics["kl"], "active": metrics["active_units"],
                                         "evaluate_ppl": metrics["ppl_bound"], "seconds": seconds}
        if topics is None:
            topics = (latent_dim, top_words(model, vocab, posterior_means(model, test, args), directions=5))

    console.print(_results_table(results, args))
    console.print(_paper_table(results))
    latent_dim, directions = topics
    table = Table(title=f"NVDM {latent_dim}: the 10 words with the largest weight in R along the 5 latent "
                        f"dimensions whose posterior means vary most (the paper's Table 2)")
    table.add_column("dim", justify="right")
    table.add_column("top words")
    for dim, words in directions:
        table.add_row(str(dim), " ".join(words))
    console.print(table)


if __name__ == "__main__":
    main()
