"""`seqlvm score` on real prepared corpora: a row per sequence in split order, numbers that do not depend on where
or in what batches they were computed (this process, one Ray Data replica, two), `seqlvm evaluate`'s
importance-weighted NLL summed from the same rows, bad input refused before Ray starts, and no output left by a job
that fails."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from seqlvm import cli, training
from seqlvm.checkpoint import load_model, save_checkpoint
from seqlvm.models import build_model
from seqlvm.operations import ModelOperations
from seqlvm.scoring import OnRay, Scorer, read_description, row_seed
from seqlvm.scoring.rows import split_pieces
from seqlvm.training import evaluate_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
VRNN = FIXTURES / "checkpoints" / "vrnn.pt"
ROLLS = FIXTURES / "datasets" / "tiny-rolls"
TEXT_CHECKPOINT = FIXTURES / "checkpoints" / "sentence-vae.pt"
TINY_TEXT = FIXTURES / "datasets" / "tiny-text"
SAMPLES = 3
LATENT = 4
RAY_ROWS = 600  # more than the first shard: the rows cross pieces, shards and replicas (checked)


@pytest.fixture(scope="module")
def checkpoint(shakespeare, tmp_path_factory) -> Path:
    """A small (untrained) sentence VAE of the Shakespeare corpus."""
    dataset = PreparedDataset.open(shakespeare)
    torch.manual_seed(0)
    model = build_model("sentence-vae", {"embedding_dim": 16, "hidden_dim": 32, "latent_dim": LATENT},
                        dataset.input_size)
    folder = tmp_path_factory.mktemp("score-checkpoint")
    return save_checkpoint(folder, model, step=0, config={}, data=DataDescription.of_dataset(dataset).to_dict())


def score(model: Path, data: Path, out: Path, *flags: str) -> pa.Table:
    argv = ["score", str(model), "--data", str(data), "--samples", str(SAMPLES), "--out", str(out), *flags]
    assert cli.main(argv) == 0
    return pq.read_table(out)


@pytest.fixture(scope="module")
def in_process(shakespeare, checkpoint, tmp_path_factory):
    """The whole test split scored in this process (no Ray)."""
    return score(checkpoint, shakespeare, tmp_path_factory.mktemp("scores") / "in-process.parquet")


def test_a_row_per_sequence_in_split_order_and_evaluate_sums_the_same_rows(shakespeare, checkpoint, in_process):
    dataset = PreparedDataset.open(shakespeare)
    sequences = dataset.read("test")
    table = in_process
    assert table.num_rows == len(sequences) == dataset.splits["test"].sequences
    assert table["row"].to_pylist() == list(range(len(sequences)))
    assert table["steps"].to_pylist() == [len(ids) + 1 for ids in sequences]  # joined back on `row`: tokens + </s>
    iw_ll, elbo, steps = (table[name].to_pylist() for name in ("iw_ll", "elbo", "steps"))
    assert all(i >= e - 1e-4 for i, e in zip(iw_ll, elbo))  # log-mean-exp of the weights >= their mean
    assert table["iw_ll_per_step"].to_pylist() == pytest.approx([i / s for i, s in zip(iw_ll, steps)])
    assert table["samples"].to_pylist() == [SAMPLES] * len(sequences)
    assert min(table["kl"].to_pylist()) >= 0 and {len(mu) for mu in table["posterior_mean"].to_pylist()} == {LATENT}
    operations = ModelOperations(load_model(str(checkpoint)))
    for row in (0, 1, len(sequences) - 1):  # a row is its sequence's scores, from the draws of (seed 0, row)
        alone = operations.score_sequences([sequences[row]], SAMPLES, seed=row_seed(0, row))
        assert {name: table[name][row].as_py() for name in alone} == {name: values[0] for name, values in alone.items()}
    metrics = evaluate_checkpoint(str(checkpoint), str(shakespeare), "test", iw_samples=SAMPLES, decodes=0)
    assert metrics["sentences"] == len(sequences)
    assert metrics["iw_nll"] == -math.fsum(iw_ll) / len(iw_ll)
    assert metrics["iw_ll_per_step"] == pytest.approx(math.fsum(iw_ll) / sum(steps), rel=1e-12)


def test_rows_do_not_depend_on_batches_but_on_the_seed(shakespeare, checkpoint, in_process, tmp_path):
    batched = score(checkpoint, shakespeare, tmp_path / "b7.parquet", "--batch-size", "7", "--limit", "300")
    assert batched.equals(in_process.slice(0, 300))
    reseeded = score(checkpoint, shakespeare, tmp_path / "seed1.parquet", "--seed", "1", "--limit", "300")
    assert reseeded["iw_ll"].to_pylist() != batched["iw_ll"].to_pylist()
    assert reseeded["kl"].equals(batched["kl"])  # the posterior does not depend on the draws
    description = read_description(str(tmp_path / "seed1.parquet"))
    assert description["seed"] == 1 and description["rows"] == 300 and description["samples"] == SAMPLES
    assert description["split"] == "test" and description["data"] == str(shakespeare)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_one_and_two_replicas_give_the_rows_of_this_process(ray_session, shakespeare, checkpoint, in_process,
                                                             tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # Ray's output goes to runs/logs/ under the working folder
    assert len({piece.path for piece in split_pieces(PreparedDataset.open(shakespeare), "test", 16, RAY_ROWS)}) > 1
    rows = ["--limit", str(RAY_ROWS)]
    one = score(checkpoint, shakespeare, tmp_path / "one.parquet", "--replicas", "1", *rows)
    assert "Ray's output: runs/logs/score-" in capsys.readouterr().err
    two = score(checkpoint, shakespeare, tmp_path / "two.parquet", "--replicas", "2", "--batch-size", "50", *rows,
                "--verbose")
    assert one.equals(in_process.slice(0, RAY_ROWS)) and two.equals(in_process.slice(0, RAY_ROWS))

    evaluated = []

    def recorded(*args, **kwargs):
        evaluated.append((kwargs["scoring"], evaluate_checkpoint(*args, **kwargs)))
        return evaluated[-1][1]
    monkeypatch.setattr(training, "evaluate_checkpoint", recorded)  # what `seqlvm evaluate` calls
    assert cli.main(["evaluate", str(checkpoint), "--data", str(shakespeare), "--samples", str(SAMPLES),
                     "--decodes", "0", "--replicas", "2", *rows, "--verbose"]) == 0
    (placement, on_ray), = evaluated
    assert isinstance(placement, OnRay) and placement.replicas == 2
    assert on_ray == evaluate_checkpoint(str(checkpoint), str(shakespeare), "test", iw_samples=SAMPLES, decodes=0,
                                         limit=RAY_ROWS)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_frame_model_scores_the_same_on_ray(ray_session, tmp_path):
    here = score(VRNN, ROLLS, tmp_path / "here.parquet")
    there = score(VRNN, ROLLS, tmp_path / "there.parquet", "--replicas", "2", "--batch-size", "1", "--verbose")
    assert there.equals(here) and here.num_rows == PreparedDataset.open(ROLLS).splits["test"].sequences
    assert "kl" not in here.column_names and "posterior_mean" not in here.column_names  # no global latent
    metrics = evaluate_checkpoint(str(VRNN), str(ROLLS), "test", iw_samples=SAMPLES)
    assert metrics["iw_nll"] == -math.fsum(here["iw_ll"].to_pylist()) / here.num_rows


@pytest.fixture
def ws(tmp_path) -> Path:
    shutil.copytree(TINY_TEXT, tmp_path / "text")
    shutil.copy(TEXT_CHECKPOINT, tmp_path / "text.pt")
    (tmp_path / "taken.parquet").write_bytes(b"earlier scores")
    (tmp_path / "folder").mkdir()
    return tmp_path


# (case, arguments after `score`, words the error line must contain)
BAD = [
    ("a frame model on text", ["{vrnn}", "--data", "{ws}/text"], "frames of 88"),
    ("a text model on frames", ["{ws}/text.pt", "--data", "{rolls}"], "vocabulary"),
    ("a text model on another vocabulary", ["{ws}/text.pt", "--data", "{shakespeare}"], "vocabulary"),
    ("no such model", ["{ws}/nope.pt", "--data", "{ws}/text"], "nope.pt"),
    ("an existing --out", ["{ws}/text.pt", "--data", "{ws}/text", "--out", "{ws}/taken.parquet"], "--overwrite"),
    ("--out a folder", ["{ws}/text.pt", "--data", "{ws}/text", "--out", "{ws}/folder"], "a folder"),
    ("--out inside the data", ["{ws}/text.pt", "--data", "{ws}/text", "--out", "{ws}/text/scores.parquet"],
     "inside the data"),
    ("no importance samples", ["{ws}/text.pt", "--data", "{ws}/text", "--samples", "0"], "--samples 0"),
    ("a batch of no rows", ["{ws}/text.pt", "--data", "{ws}/text", "--batch-size", "0"], "--batch-size 0"),
    ("a negative seed", ["{ws}/text.pt", "--data", "{ws}/text", "--seed", "-1"], "--seed -1"),
    ("no replicas", ["{ws}/text.pt", "--data", "{ws}/text", "--replicas", "0"], "--replicas 0"),
    ("more replicas than CPUs", ["{ws}/text.pt", "--data", "{ws}/text", "--cpus", "1", "--replicas", "2"],
     "--replicas 2"),
    ("a Jobs API address", ["{ws}/text.pt", "--data", "{ws}/text", "--address", "http://127.0.0.1:8265"],
     "Jobs API"),
    ("no such split", ["{ws}/text.pt", "--data", "{ws}/text", "--split", "dev"], "dev"),
]


@pytest.mark.parametrize("case, argv, words", BAD, ids=[case for case, _, _ in BAD])
def test_bad_input_is_refused_in_one_line_before_ray_starts(ws, shakespeare, case, argv, words, capsys,
                                                            monkeypatch):
    import ray

    starts = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: starts.append(kwargs))
    argv = [arg.format(ws=ws, vrnn=VRNN, rolls=ROLLS, shakespeare=shakespeare) for arg in argv]
    if "--out" not in argv:
        argv += ["--out", str(ws / "new.parquet")]
    if "--replicas" not in argv:  # on Ray, so that a check made once Ray has started would be seen
        argv += ["--replicas", "2"]
    before = sorted(p.name for p in ws.rglob("*"))
    try:
        code = cli.main(["score", *argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, f"{case}: exit {code}\n{err}"
    assert words in lines[0], f"{case}: {lines[0]!r} does not name {words!r}"
    assert sorted(p.name for p in ws.rglob("*")) == before and (ws / "taken.parquet").read_bytes() == b"earlier scores"
    assert not starts, f"{case}: Ray was started"


def test_a_job_that_fails_leaves_the_output_as_it_was(ws, monkeypatch):
    calls = []

    def fail_on_the_second_batch(self, batch):
        calls.append(batch.num_rows)
        if len(calls) == 2:
            raise RuntimeError("replica lost")
        return scorer_call(self, batch)
    scorer_call = Scorer.__call__
    monkeypatch.setattr(Scorer, "__call__", fail_on_the_second_batch)
    with pytest.raises(RuntimeError, match="replica lost"):
        cli.main(["score", str(ws / "text.pt"), "--data", str(ws / "text"), "--out", str(ws / "taken.parquet"),
                  "--overwrite", "--batch-size", "5"])
    assert (ws / "taken.parquet").read_bytes() == b"earlier scores"
    assert sorted(p.name for p in ws.iterdir()) == ["folder", "taken.parquet", "text", "text.pt"]  # no staging file
