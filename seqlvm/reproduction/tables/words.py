"""Paper 003 (Schmidt & Hofmann 2018), Table 1 on the words task: the deep state-space model with TRIL flows on
the plain ELBO (K=1) and with importance-weighted resampling (K=10), the 2xTRIL K=10 model, the GRU language model
of the same state size (BASELINE-8D), and ORACLE-TRAIN (the training distribution sampled). Our words come from
wordfreq's English frequencies, not BooksCorpus: every row is indicative."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from pipelines.dataset import PreparedDataset
from pipelines.words import SOURCE, WordOptions, prepare_words
from seqlvm.models import build_model
from seqlvm.reproduction.fit import fit
from seqlvm.reproduction.table import Check, DataFile, Line, PaperTable, Row, RowRun, trend, value
from seqlvm.training import TrainConfig
from seqlvm.word_metrics import oracle_train_metrics, word_task_metrics

STATE = 8  # the paper's state size d (and the baseline's embedding and GRU)
TRIL = {"generative_flow": "tril", "inference_flow": "tril"}
MODELS = {  # row -> (registered model, its config)
    "TRIL": ("dssm", {**TRIL, "importance_samples": 1}),
    "TRIL, K=10": ("dssm", {**TRIL, "importance_samples": 10}),
    "2xTRIL, K=10": ("dssm", {"generative_flow": "2xtril", "inference_flow": "2xtril", "importance_samples": 10}),
    "BASELINE-8D": ("rnnlm", {"embedding_dim": STATE, "hidden_dim": STATE, "word_keep_rate": 1.0, "cell": "gru"}),
}
ORACLE = "ORACLE-TRAIN"
METRICS = {"xent_train": "H[P_train, P^] (nats)", "xent_test": "H[P_test, P^] (nats)",
           "in_vocab_unique": "sampled w in V, distinct", "in_vocab": "sampled w in V",
           "mutual_information": "mean I(t) (nats)"}
PAPER = {  # Table 1, means over 5 or 10 runs, in the order of METRICS
    "TRIL": (12.13, 11.99, 0.18, 0.43, 0.95),
    "TRIL, K=10": (11.43, 11.47, 0.16, 0.49, 1.12),
    "2xTRIL, K=10": (11.33, 11.38, 0.16, 0.49, 1.28),
    "BASELINE-8D": (12.92, 12.97, 0.13, 0.53, None),
    ORACLE: (7.0, 7.02, 0.27, 1.0, None),
}
BUDGETS = {  # words prepared, steps, particles per word for log P^(w), sampled words, I(t)'s prefixes x noise draws
    "quick": {"vocab_size": 2000, "corpus_tokens": 20000, "steps": 60, "particle_budget": 10, "generated": 1000,
              "mi_prefixes": 100, "mi_noise": 20},
    "paper": {"vocab_size": 20000, "corpus_tokens": 250000, "steps": 20000, "particle_budget": 50,
              "generated": 10000, "mi_prefixes": 1000, "mi_noise": 100},
}
BASIS = ("our words are wordfreq's English frequencies ({types:,} types), the paper's BooksCorpus's (143K types): "
         "another distribution")


def rows(budget: str, data_root: Path | None, data_dir: Path) -> list[Row]:
    settings = BUDGETS[budget]
    options = WordOptions(vocab_size=settings["vocab_size"], corpus_tokens=settings["corpus_tokens"])
    folder = data_dir / f"words-{budget}"
    manifest = prepare_words(SOURCE, folder, options)
    data = DataFile(f"{SOURCE} ({manifest['word_types']:,} types)", str(folder), manifest["fingerprint"])
    common = {**settings, "batch_size": 64, "lr": 3e-3, "seed": 0, "types": manifest["word_types"]}
    return [Row("words", name, {**common, "model": name}, data) for name in (ORACLE, *MODELS)]


def run(row: Row, work: RowRun) -> list[Line]:
    settings, dataset = row.settings, PreparedDataset.open(row.data.path)
    if row.name == ORACLE:
        measured = oracle_train_metrics(dataset.location, settings["generated"], seed=settings["seed"])
    else:
        registered, config = MODELS[row.name]
        torch.manual_seed(settings["seed"])
        model = build_model(registered, config, len(dataset.vocab))
        cfg = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], seed=settings["seed"],
                          log_every=max(1, settings["steps"] // 10), kl_anneal="constant", kl_weight=1.0)
        fit(model, dataset.read("train"), cfg, settings["steps"], work)
        # A K-particle DSSM spends K particles on each importance sample: every model gets the same particles a word.
        particles = getattr(model.config, "importance_samples", 1)
        mi = {"num_prefixes": settings["mi_prefixes"], "num_noise": settings["mi_noise"],
              "max_len": dataset.options["max_length"] + 1}
        measured = word_task_metrics(model, dataset, num_samples=max(1, settings["particle_budget"] // particles),
                                     num_generated=settings["generated"], mi_options=mi)
    basis = BASIS.format(types=settings["types"])
    return [Line(row.name, heading, finite(measured.get(key)), paper, False, basis)
            for (key, heading), paper in zip(METRICS.items(), PAPER[row.name])]


def finite(number: float | None) -> float | None:
    """None for a value that cannot be printed as a number (the oracle's infinite test cross-entropy)."""
    return number if number is not None and math.isfinite(number) else None


def checks(lines: list[Line]) -> list[Check]:
    test = METRICS["xent_test"]
    return [
        trend("K=10 fits the test words better than K=1 (lower H[P_test, P^])",
              {"TRIL": value(lines, "TRIL", test), "TRIL, K=10": value(lines, "TRIL, K=10", test)},
              lambda k1, k10: k10 < k1),
        trend("the DSSM with K=10 fits the test words better than the GRU baseline",
              {"TRIL, K=10": value(lines, "TRIL, K=10", test), "BASELINE-8D": value(lines, "BASELINE-8D", test)},
              lambda dssm, gru: dssm < gru),
        trend("the DSSM's noise carries information about its characters (mean I(t) > 0)",
              {"TRIL, K=10": value(lines, "TRIL, K=10", METRICS["mutual_information"])}, lambda mi: mi > 0),
    ]


TABLE = PaperTable(
    key="words", paper="003 Schmidt & Hofmann 2018, Table 1",
    title="Words task: deep state-space models against a GRU language model",
    rows=rows, run=run, checks=checks,
    paper_cost="5 models of 20,000 steps on 250K words: about 2 hours on one CPU core each (from 1,500 steps in 5 "
               "minutes); not measured on a GPU")
