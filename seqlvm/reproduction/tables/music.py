"""Paper 000, Table 2 (Fraccaro et al. 2016, with the NASMC column of Gu et al. 2015's Table 2): the average test
log-likelihood per time step of polyphonic music, for the LSTM baseline (RNN), VRNN (in STORN's row), SRNN and the
latent-variable RNN trained with NASMC, on every piano-roll set found: the SRNN authors' npz files shared beside
this repository, and, with a data root, Boulanger-Lewandowski's pickles (the files behind the published numbers)
and any other .npz or .pickle there.

Each row trains in its own process with early stopping on the validation bound and reports two lines: the test
ELBO per step (a bound) and the importance-weighted log-likelihood per step. SRNN's published number is an ELBO;
the RNN's, STORN's and NASMC's are log-likelihood estimates, so each goes on the line of its kind."""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.errors import SeqlvmError
from pipelines.midi import PICKLE_SUFFIXES, MidiOptions, prepare_midi
from pipelines.stream import local_batches
from seqlvm.checkpoint import LoadedModel
from seqlvm.evaluation import evaluate
from seqlvm.models import SequenceModel, build_model
from seqlvm.reproduction.fit import fit
from seqlvm.reproduction.table import Check, DataFile, Line, PaperTable, Row, RowRun, trend, value
from seqlvm.scoring import InProcess, ScoreJob, importance_weighted
from seqlvm.training import TrainConfig

REPO = Path(__file__).resolve().parents[3]
SHARED_MIDI = REPO.parent / "shared" / "data" / "midi"
SHARED_FILES = ("jsb_raw_batchsize16_seqlen100.npz", "nottingham_raw_batchsize16_seqlen100.npz")
PICKLES = {"JSB Chorales.pickle": "JSB", "Nottingham.pickle": "Nottingham", "MuseData.pickle": "MuseData",
           "Piano-midi.de.pickle": "Piano-midi.de"}  # Boulanger-Lewandowski's files -> the paper's column
AUTHORS_NPZ = {"jsb_raw_batchsize16_seqlen100.npz": "JSB", "nottingham_raw_batchsize16_seqlen100.npz": "Nottingham",
               "muse_raw_batchsize16_seqlen100.npz": "MuseData", "piano_raw_batchsize16_seqlen100.npz": "Piano-midi.de"}
MODELS = {"rnn": "RNN", "vrnn": "VRNN", "srnn": "SRNN", "nasmc": "NASMC"}
LATENT_MODELS = ("vrnn", "srnn", "nasmc")
# The test ELBO is a one-sample estimate: for a model whose latent goes unused (VRNN on JSB at the quick size: a KL
# of 0.004 nats a piece) it ties with the IW estimate, and its sampling noise (about 0.004 nats/step) decides.
ELBO_NOISE = 0.01
ELBO, IW = "elbo", "iw"
ELBO_HEADING, IW_HEADING = "test ELBO / step", "test IW LL / step"
# Table 2 of paper 000 (nats per step) and the line each goes on: SRNN's is an ELBO; the RNN's, STORN's (our
# VRNN's row) and NASMC's (Gu et al.'s LV-RNN) are importance-sampled or exact log-likelihoods.
PAPER = {
    "srnn": (ELBO, {"Nottingham": -2.94, "JSB": -4.74, "MuseData": -6.28, "Piano-midi.de": -8.20}),
    "nasmc": (IW, {"Nottingham": -2.72, "JSB": -3.99, "MuseData": -6.89, "Piano-midi.de": -7.61}),
    "vrnn": (IW, {"Nottingham": -2.85, "JSB": -6.91, "MuseData": -6.16, "Piano-midi.de": -7.13}),
    "rnn": (IW, {"Nottingham": -4.46, "JSB": -8.71, "MuseData": -8.13, "Piano-midi.de": -8.37}),
}
PUBLISHED_MODEL = {"vrnn": "; the paper's row is STORN, a VRNN with an N(0, I) prior (ours learns its prior)",
                   "nasmc": "; the paper's row is Gu et al.'s LV-RNN trained with NASMC"}
# The paper budget: the defaults of the SRNN authors' MainSRNN_midi.py (github.com/marcofraccaro/srnn; the paper's
# excerpt gives no music sizes) for every model: d_t and a_t of 300 units, z_t of 100, networks of 500, batches of
# 16 chunks of 100 steps, Adam 1e-3, 50 epochs; K=40 importance samples as Chung et al.; the whole test split. The
# quick budget trains tiny models on 25-step chunks (a step of the recurrent loops costs a quarter) at a higher rate,
# and measures the first test pieces. NASMC's SMC sweep is a Python loop over time steps and particles: its quick
# row is smaller still.
BUDGETS = {
    "quick": {"hidden": 32, "latent": 8, "feature": 32, "batch_size": 32, "lr": 1e-2, "steps": 300, "chunk_steps": 25,
              "evaluations": 5, "iw_samples": 40, "test_pieces": 20, "valid_pieces": 16},
    "paper": {"hidden": 300, "latent": 100, "feature": 500, "batch_size": 16, "lr": 1e-3, "epochs": 50,
              "chunk_steps": 100, "evaluations": 10, "iw_samples": 40, "test_pieces": None, "valid_pieces": None},
}
NASMC_BUDGETS = {  # 8 particles: our config's (the excerpt of Gu et al. gives no count)
    "quick": {**BUDGETS["quick"], "hidden": 16, "latent": 4, "feature": 16, "particles": 4, "steps": 80,
              "iw_samples": 8, "test_pieces": 5, "valid_pieces": 8},
    "paper": {**BUDGETS["paper"], "particles": 8},
}
COMMON = {"grad_clip": 10.0, "seed": 0}
FOLDER_UNSAFE = re.compile(r"[^\w.-]+")  # in a file name, what a prepared folder's name replaces with "-"
# What our LSTM baseline measured on the JSB npz (3,000 steps of hidden 128: docs/results.md, "JSB Chorales")
MEASURED = {"jsb_raw_batchsize16_seqlen100.npz": " (our LSTM baseline: -6.32 nats/step on it, the published RNN "
                                                 "-8.71)"}


def rows(budget: str, data_root: Path | None, data_dir: Path) -> list[Row]:
    chunk_steps = BUDGETS[budget]["chunk_steps"]
    found = []
    for path in piano_roll_files(data_root):
        prepared = data_dir / "music" / f"{FOLDER_UNSAFE.sub('-', path.name)}-chunks{chunk_steps}"
        splits = prepare_piano_rolls(path, prepared, chunk_steps)["splits"]
        data = DataFile.of_file(path)
        for model in MODELS:
            settings = {**COMMON, **(NASMC_BUDGETS if model == "nasmc" else BUDGETS)[budget], "model": model,
                        "file": path.name, "prepared": str(prepared), "test_sequences": splits["test"]["sequences"],
                        "test_steps": splits["test"]["steps"]}
            if "epochs" in settings:
                settings["steps"] = settings["epochs"] * math.ceil(splits["train"]["sequences"]
                                                                   / settings["batch_size"])
            found.append(Row("music", f"{data_set_label(path.name)} / {MODELS[model]}", settings, data))
    return found


def piano_roll_files(data_root: Path | None) -> list[Path]:
    """The shared npz files present (none on a user's machine), then every .npz and .pickle directly in `data_root`
    (a file of the same name as a shared one replaces it)."""
    files = {name: SHARED_MIDI / name for name in SHARED_FILES if (SHARED_MIDI / name).is_file()}
    if data_root is not None:
        files.update({path.name: path for path in sorted(data_root.iterdir())
                      if path.is_file() and path.suffix.lower() in (".npz", *PICKLE_SUFFIXES)})
    return list(files.values())


def prepare_piano_rolls(path: Path, out: Path, chunk_steps: int) -> dict:
    """The manifest of `path` prepared as 88-key rolls in `out`, training and validation pieces cut into chunks of
    `chunk_steps` (a no-op when prepared before); a file that cannot be read raises one SeqlvmError line naming
    it."""
    try:
        return prepare_midi(str(path), out, MidiOptions(chunk_steps=chunk_steps), overwrite=True)
    except SeqlvmError as exc:  # the hint about `prepare --on-error` does not apply to a reproduction
        raise SeqlvmError(str(exc).splitlines()[0].removesuffix(" (pass --on-error skip to skip unreadable files)"))


def data_set_label(file_name: str) -> str:
    if file_name in PICKLES:
        return f"{PICKLES[file_name]} (pickle)"
    if file_name in AUTHORS_NPZ:
        return f"{AUTHORS_NPZ[file_name]} (npz)"
    return file_name


def run(row: Row, work: RowRun) -> list[Line]:
    settings = row.settings
    dataset = PreparedDataset.open(settings["prepared"])
    torch.manual_seed(settings["seed"])
    model = build_model(settings["model"], model_config(settings, dataset.output), dataset.frame_dim)
    train_with_early_stopping(model, dataset, settings, work)
    measured = test_metrics(model, dataset, settings)
    return result_lines(row, measured)


def model_config(settings: dict, output: str) -> dict:
    config = {"hidden_dim": settings["hidden"], "feature_dim": settings["feature"], "output": output}
    if settings["model"] != "rnn":
        config["latent_dim"] = settings["latent"]
    if settings["model"] == "nasmc":
        config.update(particles=settings["particles"], proposal_hidden_dim=settings["hidden"])
    return config


def train_with_early_stopping(model: SequenceModel, dataset: PreparedDataset, settings: dict, work: RowRun) -> None:
    """One run of fit() (one Adam) of `steps` steps, the KL weight rising linearly over the first fifth; at
    `evaluations` even points, the validation bound per step. The model ends with the weights of the best (early
    stopping, as the papers do)."""
    train, valid = dataset.read("train"), dataset.read("valid", settings["valid_pieces"])
    steps = settings["steps"]
    best = {"bound": -math.inf, "state": None}

    def log_and_validate(step: int, metrics: dict) -> None:
        work.log(step, metrics)
        batches = local_batches(valid, settings["batch_size"], bucket_factor=20)
        bound = evaluate(model, batches, device=work.device)["elbo_per_step"]
        model.train()
        work.log(step, {"valid/elbo_per_step": bound})
        if bound > best["bound"]:
            best.update(bound=bound, state={name: tensor.clone() for name, tensor in model.state_dict().items()})

    every = max(1, math.ceil(steps / settings["evaluations"]))  # fit() logs, and so validates, every `every` steps
    cfg = TrainConfig(batch_size=settings["batch_size"], lr=settings["lr"], grad_clip=settings["grad_clip"],
                      seed=settings["seed"], bucket_factor=1, log_every=every, kl_anneal="linear",
                      kl_warmup_steps=max(1, steps // 5))
    validating = RowRun(work.budget, work.data_dir, log_and_validate, work.device)
    fit(model, train, cfg, steps, validating)
    work.steps += validating.steps
    model.load_state_dict(best["state"])


def test_metrics(model: SequenceModel, dataset: PreparedDataset, settings: dict) -> dict:
    """The test split's (its first `test_pieces`) ELBO and importance-weighted log-likelihood per step, measured
    as `seqlvm evaluate` does."""
    limit = settings["test_pieces"]
    torch.manual_seed(settings["seed"])
    batches = local_batches(dataset.read("test", limit), settings["batch_size"], bucket_factor=20)
    metrics = evaluate(model, batches)
    loaded = LoadedModel(model, DataDescription.of_dataset(dataset), {"path": None})
    job = ScoreJob(loaded, dataset, "test", settings["iw_samples"], settings["seed"], limit=limit)
    metrics.update(importance_weighted(job, InProcess()))
    return metrics


def iw_heading(settings: dict) -> str:
    if settings["model"] == "nasmc":
        return f"{IW_HEADING} (K={settings['iw_samples']} SMC sweeps of {settings['particles']} particles)"
    return f"{IW_HEADING} (K={settings['iw_samples']})"


def result_lines(row: Row, measured: dict) -> list[Line]:
    """The ELBO line and the importance-weighted line; the paper's number on the line of its kind, comparable on
    Boulanger-Lewandowski's pickles."""
    settings = row.settings
    model, file_name = settings["model"], settings["file"]
    published_on, numbers = PAPER[model]
    paper = numbers.get(PICKLES.get(file_name) or AUTHORS_NPZ.get(file_name))
    data_basis = data_description(settings)
    lines = []
    for kind, heading, key in ((ELBO, ELBO_HEADING, "elbo_per_step"), (IW, iw_heading(settings), "iw_ll_per_step")):
        published = paper if kind == published_on else None
        basis = data_basis + (PUBLISHED_MODEL.get(model, "") if published is not None else "")
        lines.append(Line(row.name, heading, measured[key], published, file_name in PICKLES and published is not None,
                          basis))
    return lines


def data_description(settings: dict) -> str:
    """Why a row's numbers compare with the paper's, or only indicate: its data, and the test pieces measured."""
    file_name, total, pieces = settings["file"], settings["test_sequences"], settings["test_pieces"]
    measured = f"; {pieces} of its {total} test pieces measured" if pieces and pieces < total else ""
    if file_name in PICKLES:
        return f"Boulanger-Lewandowski's {file_name}, as the paper{measured}"
    if file_name in AUTHORS_NPZ:
        return (f"the SRNN authors' npz ({total} test pieces, {settings['test_steps']:,} steps), at another time "
                f"resolution than the pickles behind the published numbers{MEASURED.get(file_name, '')}{measured}")
    return f"{file_name}: not one of the papers' data sets{measured}"


def checks(lines: list[Line]) -> list[Check]:
    found = []
    for data_set in dict.fromkeys(line.label.rpartition(" / ")[0] for line in lines):
        for model in LATENT_MODELS:
            found.append(trend(f"{data_set}: {MODELS[model]}'s importance-weighted estimate is at least its ELBO, "
                               f"within {ELBO_NOISE} nats/step (a bound never beats the estimate)",
                               {"ELBO": measured(lines, data_set, model, ELBO),
                                "IW LL": measured(lines, data_set, model, IW)},
                               lambda elbo, iw: iw >= elbo - ELBO_NOISE))
        found.append(trend(f"{data_set}: VRNN and SRNN beat the RNN baseline's log-likelihood per step",
                           {MODELS[model]: measured(lines, data_set, model, IW) for model in ("rnn", "vrnn", "srnn")},
                           lambda rnn, vrnn, srnn: vrnn > rnn and srnn > rnn))
        found.append(trend(f"{data_set}: SRNN's ELBO is above VRNN's (paper, JSB: SRNN -4.74, STORN -6.91)",
                           {MODELS[model]: measured(lines, data_set, model, ELBO) for model in ("srnn", "vrnn")},
                           lambda srnn, vrnn: srnn > vrnn))
    return found


def measured(lines: list[Line], data_set: str, model: str, kind: str) -> float | None:
    """Our ELBO or importance-weighted value of `model` on `data_set` (the IW heading names its K)."""
    label = f"{data_set} / {MODELS[model]}"
    if kind == ELBO:
        return value(lines, label, ELBO_HEADING)
    return next((line.ours for line in lines if line.label == label and line.metric.startswith(IW_HEADING)), None)


TABLE = PaperTable(
    key="music", paper="000 Fraccaro et al. 2016, Table 2 (NASMC: Gu et al. 2015, Table 2)",
    title="Polyphonic music: test log-likelihood per time step of RNN, VRNN (STORN's row), SRNN and NASMC",
    rows=rows, run=run, checks=checks,
    paper_cost="4 rows a data set at the SRNN authors' sizes for 50 epochs (the JSB npz 850 steps, the Nottingham npz "
               "4,600): a step took 0.7 s (RNN) to 3-10 s (SRNN, VRNN, NASMC) on this shared 2-core CPU, so about "
               "30 CPU-hours for the 8 npz rows and days more with the four pickles; not measured on a GPU, where "
               "the models' per-time-step Python loops still bound a step")
