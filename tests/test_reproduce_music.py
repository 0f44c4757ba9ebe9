"""The `music` table of `seqlvm reproduce` (paper 000, Table 2) on tiny settings, without Ray: its data discovery
(the SRNN authors' npz files beside the repository, Boulanger-Lewandowski's pickles and other files in a data root),
its rows' lines (which line carries the paper's number, and when it compares), early stopping, and its checks on
hand-made lines."""
from __future__ import annotations

import math
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch

from pipelines.errors import SeqlvmError
from seqlvm.reproduction.table import DataFile, Line, Row, RowRun
from seqlvm.reproduction.tables import music

SLICE = Path(__file__).resolve().parent / "fixtures" / "midi" / "jsb-slice.npz"
SHARED = [music.SHARED_MIDI / name for name in music.SHARED_FILES]
needs_shared = pytest.mark.skipif(not all(path.is_file() for path in SHARED),
                                  reason="the SRNN authors' npz files are not in ../shared/data/midi")
TINY = {"hidden": 8, "feature": 8, "latent": 2, "batch_size": 4, "steps": 3, "evaluations": 2, "iw_samples": 3,
        "test_pieces": 2, "valid_pieces": 2}
IW_K3 = "test IW LL / step (K=3)"


def write_boulanger_pickle(path: Path, seed: int = 0) -> None:
    """Train, valid and test lists of pieces, each a list of time steps holding the MIDI notes that sound."""
    rng = random.Random(seed)

    def piece() -> list[list[int]]:
        return [sorted(rng.sample(range(55, 80), 3)) for _ in range(rng.randint(30, 40))]

    splits = {"train": [piece() for _ in range(8)], "valid": [piece() for _ in range(3)],
              "test": [piece() for _ in range(3)]}
    path.write_bytes(pickle.dumps(splits, protocol=2))


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    """The quick rows over a data root holding a Boulanger-Lewandowski pickle and another npz, with the shared npz
    files when this machine has them."""
    root = tmp_path_factory.mktemp("root")
    write_boulanger_pickle(root / "JSB Chorales.pickle")
    shutil.copy(SLICE, root / "extra.npz")
    (root / "notes.txt").write_text("not piano rolls")
    data_dir = tmp_path_factory.mktemp("data")
    return root, data_dir, {row.name: row for row in music.rows("quick", root, data_dir)}


def tiny(row: Row, **settings) -> Row:
    return Row(row.table, row.name, {**row.settings, **TINY, **settings}, row.data)


def run_row(row: Row, data_dir: Path) -> tuple[list[Line], RowRun]:
    work = RowRun("quick", data_dir)
    return music.TABLE.run(row, work), work


def test_every_piano_roll_file_found_gives_the_four_models(found):
    root, _, rows = found
    data_sets = ["JSB (pickle)", "extra.npz"]
    if all(path.is_file() for path in SHARED):
        data_sets = ["JSB (npz)", "Nottingham (npz)", *data_sets]
    assert list(rows) == [f"{data_set} / {model}" for data_set in data_sets
                          for model in ("RNN", "VRNN", "SRNN", "NASMC")]
    pickled = rows["JSB (pickle) / SRNN"]
    assert pickled.data == DataFile.of_file(root / "JSB Chorales.pickle")
    assert pickled.settings["test_sequences"] == 3 and pickled.settings["iw_samples"] == 40
    assert rows["JSB (pickle) / NASMC"].settings["particles"] == 4


def test_without_the_shared_files_or_a_data_root_there_are_no_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(music, "SHARED_MIDI", tmp_path / "absent")
    assert music.rows("quick", None, tmp_path / "data") == []


def test_a_data_root_file_named_as_a_shared_one_replaces_it(tmp_path, monkeypatch):
    shared, root = tmp_path / "shared", tmp_path / "root"
    shared.mkdir()
    root.mkdir()
    shutil.copy(SLICE, shared / music.SHARED_FILES[0])
    shutil.copy(SLICE, root / music.SHARED_FILES[0])
    monkeypatch.setattr(music, "SHARED_MIDI", shared)
    rows = music.rows("quick", root, tmp_path / "data")
    assert [row.name for row in rows] == [f"JSB (npz) / {model}" for model in ("RNN", "VRNN", "SRNN", "NASMC")]
    assert {row.data.path for row in rows} == {str(root / music.SHARED_FILES[0])}


def test_an_unreadable_pickle_is_one_error_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(music, "SHARED_MIDI", tmp_path / "absent")
    (tmp_path / "Nottingham.pickle").write_bytes(b"not a pickle at all")
    with pytest.raises(SeqlvmError) as raised:
        music.rows("quick", tmp_path, tmp_path / "data")
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "Nottingham.pickle") in message and "--on-error" not in message


@needs_shared
def test_a_row_on_the_authors_npz_is_indicative_and_deterministic(found):
    _, data_dir, rows = found
    row = tiny(rows["JSB (npz) / VRNN"])
    lines, work = run_row(row, data_dir)
    again, _ = run_row(row, data_dir)
    assert [(line.label, line.metric) for line in lines] == [("JSB (npz) / VRNN", "test ELBO / step"),
                                                             ("JSB (npz) / VRNN", IW_K3)]
    assert all(math.isfinite(line.ours) and line.ours < 0 for line in lines)
    assert [line.ours for line in lines] == [line.ours for line in again]
    assert [line.paper for line in lines] == [None, -6.91]  # STORN's importance-sampled estimate
    assert not any(line.comparable for line in lines)
    assert "SRNN authors' npz (77 test pieces, 9,396 steps)" in lines[1].basis and "-6.32" in lines[1].basis
    assert "STORN" in lines[1].basis and "STORN" not in lines[0].basis
    assert work.steps == 3


def test_on_boulanger_pickles_each_published_number_goes_on_its_kind_of_line(found):
    _, data_dir, rows = found
    srnn, _ = run_row(tiny(rows["JSB (pickle) / SRNN"]), data_dir)
    assert [(line.paper, line.comparable) for line in srnn] == [(-4.74, True), (None, False)]  # SRNN's is an ELBO
    assert srnn[0].basis.startswith("Boulanger-Lewandowski's JSB Chorales.pickle, as the paper")
    rnn, _ = run_row(tiny(rows["JSB (pickle) / RNN"]), data_dir)
    assert [(line.paper, line.comparable) for line in rnn] == [(None, False), (-8.71, True)]
    assert rnn[0].ours == pytest.approx(rnn[1].ours, abs=1e-6)  # an RNN's bound is its exact likelihood
    nasmc, work = run_row(tiny(rows["JSB (pickle) / NASMC"], particles=2), data_dir)
    assert nasmc[1].metric == "test IW LL / step (K=3 SMC sweeps of 2 particles)"
    assert [(line.paper, line.comparable) for line in nasmc] == [(None, False), (-3.99, True)]
    assert "Gu et al.'s LV-RNN" in nasmc[1].basis and "Gu et al." not in nasmc[0].basis
    assert all(math.isfinite(line.ours) for line in srnn + rnn + nasmc) and work.steps == 3


def test_a_file_that_is_not_one_of_the_papers_has_no_published_number(found):
    _, data_dir, rows = found
    lines, _ = run_row(tiny(rows["extra.npz / SRNN"]), data_dir)
    assert [(line.paper, line.comparable) for line in lines] == [(None, False), (None, False)]
    assert lines[0].basis == "extra.npz: not one of the papers' data sets; 2 of its 4 test pieces measured"


def test_early_stopping_keeps_the_weights_of_the_best_validation_bound(found, monkeypatch):
    _, data_dir, rows = found
    settings = {**rows["JSB (pickle) / VRNN"].settings, **TINY, "steps": 20, "evaluations": 3}
    fits, bounds = [], iter([-5.0, -3.0, -4.0])

    def fake_fit(model, sequences, cfg, steps, work):  # the weights say at which evaluation point they were made
        fits.append((cfg, steps))
        for point, step in enumerate((7, 14, 20), 1):
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(point)
            work.log(step, {})
        work.steps += steps

    monkeypatch.setattr(music, "fit", fake_fit)
    monkeypatch.setattr(music, "evaluate", lambda model, batches, **options: {"elbo_per_step": next(bounds)})
    dataset = music.PreparedDataset.open(settings["prepared"])
    model = music.build_model("vrnn", music.model_config(settings, dataset.output), dataset.frame_dim)
    work = RowRun("quick", data_dir)
    music.train_with_early_stopping(model, dataset, settings, work)
    assert all(bool((parameter == 2).all()) for parameter in model.parameters())
    assert len(fits) == 1 and work.steps == 20  # one run of fit(): one Adam throughout
    cfg, steps = fits[0]
    assert steps == 20 and (cfg.kl_anneal, cfg.kl_warmup_steps, cfg.log_every) == ("linear", 4, 7)


def made_lines(values: dict[str, tuple[float, float]], data_set: str = "JSB (pickle)") -> list[Line]:
    """Lines of a data set's rows from {model: (ELBO, IW LL)}."""
    return [Line(f"{data_set} / {model}", metric, number, None, False, "")
            for model, pair in values.items()
            for metric, number in zip(("test ELBO / step", "test IW LL / step (K=40)"), pair)]


def test_the_checks_hold_on_the_papers_ordering_per_data_set_and_fail_against_it():
    paper_like = {"RNN": (-8.7, -8.7), "VRNN": (-7.0, -6.9), "SRNN": (-4.7, -4.6), "NASMC": (-4.2, -4.0)}
    checks = music.checks(made_lines(paper_like) + made_lines(paper_like, "Nottingham (npz)"))
    assert len(checks) == 10 and all(check.holds for check in checks)
    assert checks[0].claim.startswith("JSB (pickle): VRNN's") and checks[5].claim.startswith("Nottingham (npz)")
    broken = {"RNN": (-6.0, -6.0), "VRNN": (-6.5, -6.6), "SRNN": (-6.9, -6.8), "NASMC": (-4.2, -4.0)}
    held = {check.claim.split(": ", 1)[1][:20]: check.holds for check in music.checks(made_lines(broken))}
    assert held == {"VRNN's importance-we": False, "SRNN's importance-we": True, "NASMC's importance-w": True,
                    "VRNN and SRNN beat t": False, "SRNN's ELBO is above": False}
    tied = music.checks(made_lines({**paper_like, "VRNN": (-7.620, -7.621)}))
    assert tied[0].holds  # an unused latent: the IW estimate ties with the one-sample ELBO, within its noise
    missing = music.checks(made_lines({model: paper_like[model] for model in ("RNN", "VRNN", "SRNN")}))
    assert not missing[2].holds and "a row is missing" in missing[2].detail
