"""Piano rolls from the SRNN authors' npz files (a slice of the real JSB Chorales in tests/fixtures/midi) and frame
batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import SeqlvmError
from pipelines.midi import KEYS, read_npz_rolls
from pipelines.stream import collate_frames

# The SRNN authors' file, cut to 12 train, 4 valid and 4 test sequences (test sequences of 63-127 steps, padded to
# 127 with their mask), every array kept (docs/testing.md).
JSB = Path(__file__).parent / "fixtures" / "midi" / "jsb-slice.npz"


def test_jsb_npz_gives_binary_rolls_with_test_lengths_from_the_mask():
    splits = read_npz_rolls(JSB)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "valid": 4, "test": 4}
    raw = np.load(JSB)
    lengths = [len(r) for r in splits["test"]]
    assert lengths == raw["mask_test"].sum(1).astype(int).tolist() and len(set(lengths)) > 1
    assert all(r.shape[1] == KEYS and set(np.unique(r)) <= {0.0, 1.0} for r in splits["train"][:20])


def test_bad_npz_files_are_one_line_errors(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SeqlvmError, match="broken.npz: not a readable npz"):
        read_npz_rolls(broken)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 5, KEYS)))
    with pytest.raises(SeqlvmError, match="partial.npz: no x_valid array"):
        read_npz_rolls(partial)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x_train=np.zeros((2, 5, 12)), x_valid=np.zeros((2, 5, 12)), x_test=np.zeros((2, 5, 12)))
    with pytest.raises(SeqlvmError, match="expected \\(sequences, steps, 88\\)"):
        read_npz_rolls(wrong)


def test_collate_frames_pads_with_zeros_and_keeps_lengths():
    rolls = [np.ones((3, 4)), np.full((5, 4), 2.0)]
    batch = collate_frames(rolls)
    assert batch["frames"].shape == (2, 5, 4) and batch["lengths"].tolist() == [3, 5]
    assert batch["frames"][0, 3:].abs().sum() == 0 and batch["frames"][1].eq(2.0).all()


# --- `seqlvm prepare midi`: MIDI files, pickles, npz, music21's corpus; rendering ---

import json
import os
import pickle

import pretty_midi
import pyarrow.parquet as pq

from pipelines.midi import MidiOptions, builtin_rolls, prepare_midi, read_midi_roll, render_midi
from pipelines.shards import split_of


def write_midi(path: Path, notes, tempo: float = 120.0, drums=()) -> Path:
    """A MIDI file of (pitch, start s, end s) piano notes, and drum notes on a drum track."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    for is_drum, group in ((False, notes), (True, drums)):
        if group:
            track = pretty_midi.Instrument(program=0, is_drum=is_drum)
            track.notes = [pretty_midi.Note(velocity=90, pitch=p, start=s, end=e) for p, s, e in group]
            midi.instruments.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.write(str(path))
    return path


def key_in(split: str, options: MidiOptions, pattern: str = "piece{}.mid") -> str:
    """A file name (relative to the source folder) whose hash puts it in `split`."""
    return next(pattern.format(i) for i in range(10_000)
                if split_of(pattern.format(i), options.valid_fraction, options.test_fraction,
                            options.split_seed) == split)


def split_rolls(out: Path, manifest: dict, split: str) -> list[np.ndarray]:
    rolls = []
    for shard in manifest["splits"][split]["shards"]:
        for flat in pq.read_table(out / shard).column("frames").to_numpy(zero_copy_only=False):
            rolls.append(np.asarray(flat, dtype=np.float32).reshape(-1, KEYS))
    return rolls


def on_keys(roll: np.ndarray) -> list[list[int]]:
    """The MIDI notes on at each step."""
    return [(np.flatnonzero(step) + 21).tolist() for step in roll]


SCALE_STEPS = 250


def scale_notes(seconds_per_step: float = 0.5):
    """One note a step, climbing through all 88 keys and round again: step t holds MIDI note 21 + t % 88."""
    return [(21 + t % KEYS, t * seconds_per_step, (t + 1) * seconds_per_step) for t in range(SCALE_STEPS)]


def scale_roll() -> np.ndarray:
    roll = np.zeros((SCALE_STEPS, KEYS), dtype=np.float32)
    roll[np.arange(SCALE_STEPS), np.arange(SCALE_STEPS) % KEYS] = 1
    return roll


def test_midi_notes_sound_at_the_beats_they_cover_and_out_of_range_notes_and_drums_are_dropped(tmp_path):
    notes = [(60, 0.0, 1.0), (64, 1.0, 2.0), (67, 0.5, 2.0), (21, 1.5, 2.0), (108, 0.0, 0.5),
             (12, 0.0, 2.0), (115, 0.0, 2.0)]  # the last two are outside the piano's 21..108
    path = write_midi(tmp_path / "tune.mid", notes, drums=[(40, 0.0, 2.0)])
    assert on_keys(read_midi_roll(path)) == [[60, 108], [60, 67], [64, 67], [21, 64, 67]]
    halves = read_midi_roll(path, steps_per_beat=2)
    assert halves.shape == (8, KEYS) and on_keys(halves)[:3] == [[60, 108], [60, 108], [60, 67]]
    assert np.array_equal(read_midi_roll(path, time_step=0.25), halves)
    slow = write_midi(tmp_path / "slow.mid", [(p, 2 * s, 2 * e) for p, s, e in notes], tempo=60.0)
    assert np.array_equal(read_midi_roll(slow), read_midi_roll(path))  # steps follow the beats, not seconds


def test_midi_folder_splits_by_path_chunks_training_and_validation_and_keeps_test_pieces_whole(tmp_path):
    options = MidiOptions(valid_fraction=0.3, test_fraction=0.3, chunk_steps=100)
    names = {split: key_in(split, options, "set/piece{}.mid") for split in ("train", "valid", "test")}
    for name in names.values():
        write_midi(tmp_path / "src" / name, scale_notes())
    manifest = prepare_midi(str(tmp_path / "src"), tmp_path / "out", options)
    assert manifest["modality"] == "midi" and manifest["frame_dim"] == KEYS and manifest["output"] == "bernoulli"
    assert manifest["render"]["time_step"] == 0.5 and manifest["normalisation"] is None
    for split in ("train", "valid"):
        chunks = split_rolls(tmp_path / "out", manifest, split)
        assert [len(c) for c in chunks] == [100, 100, 50]
        assert np.array_equal(np.concatenate(chunks), scale_roll())
    assert [len(r) for r in split_rolls(tmp_path / "out", manifest, "test")] == [SCALE_STEPS]
    assert np.array_equal(split_rolls(tmp_path / "out", manifest, "test")[0], scale_roll())
    whole = prepare_midi(str(tmp_path / "src"), tmp_path / "whole", MidiOptions(
        valid_fraction=0.3, test_fraction=0.3, chunk_steps=0, max_pieces=2))
    assert sum(s["sequences"] for s in whole["splits"].values()) == 2
    assert all(s["steps"] in (0, SCALE_STEPS) for s in whole["splits"].values())


def write_pickle(path: Path, data) -> Path:
    path.write_bytes(pickle.dumps(data))
    return path


def test_boulanger_lewandowski_pickle_keeps_its_splits(tmp_path):
    data = {"train": [[(60, 64), (62,), (), [21, 108], {60}], [(70,)] * 3],
            "valid": [[(48, 52, 55)] * 4], "test": [[(60,), (61,), (62,)]]}
    manifest = prepare_midi(str(write_pickle(tmp_path / "jsb.pickle", data)), tmp_path / "out",
                            MidiOptions(chunk_steps=2))
    assert {s: v["sequences"] for s, v in manifest["splits"].items()} == {"train": 5, "valid": 2, "test": 1}
    train = split_rolls(tmp_path / "out", manifest, "train")
    assert on_keys(np.concatenate(train[:3])) == [[60, 64], [62], [], [21, 108], [60]]
    assert on_keys(split_rolls(tmp_path / "out", manifest, "test")[0]) == [[60], [61], [62]]
    with pytest.raises(SeqlvmError, match="already quantised"):
        prepare_midi(str(tmp_path / "jsb.pickle"), tmp_path / "other", MidiOptions(steps_per_beat=4))


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = write_pickle(tmp_path / "evil.pkl", {"train": [_Exploit(marker)], "valid": [], "test": []})
    with pytest.raises(SeqlvmError, match=r"evil.pkl: not a readable piano-roll pickle .*system") as error:
        prepare_midi(str(evil), tmp_path / "out", MidiOptions())
    assert "\n" not in str(error.value) and not marker.exists() and not (tmp_path / "out").exists()


def test_pickles_of_the_wrong_shape_or_with_notes_off_the_piano_are_one_line_errors(tmp_path):
    wrong = write_pickle(tmp_path / "wrong.pickle", [[(60,)]])
    with pytest.raises(SeqlvmError, match="wrong.pickle: not a dict of train, valid and test"):
        prepare_midi(str(wrong), tmp_path / "a", MidiOptions())
    data = {"train": [[(60,)], [(60,), (10,)]], "valid": [], "test": []}
    low = write_pickle(tmp_path / "low.pickle", data)
    with pytest.raises(SeqlvmError, match=r"low.pickle \(train sequence 1\): step 1 has note 10"):
        prepare_midi(str(low), tmp_path / "b", MidiOptions())
    manifest = prepare_midi(str(low), tmp_path / "c", MidiOptions(on_error="skip"))
    assert manifest["splits"]["train"]["sequences"] == 1 and "note 10" in manifest["skipped"][0]["reason"]
    truncated = tmp_path / "truncated.pickle"
    truncated.write_bytes(pickle.dumps(data)[:20])
    with pytest.raises(SeqlvmError, match="truncated.pickle: not a readable piano-roll pickle"):
        prepare_midi(str(truncated), tmp_path / "d", MidiOptions())


def test_jsb_npz_through_prepare_keeps_its_splits_and_sequences(tmp_path):
    expected = read_npz_rolls(JSB)
    manifest = prepare_midi(str(JSB), tmp_path / "jsb", MidiOptions())
    for split, rolls in expected.items():
        assert manifest["splits"][split]["sequences"] == len(rolls)
        assert manifest["splits"][split]["steps"] == sum(len(r) for r in rolls)
    assert np.array_equal(split_rolls(tmp_path / "jsb", manifest, "test")[3], expected["test"][3])


def test_builtin_bach_chorales_are_four_part_rolls_converted_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQLVM_CACHE", str(tmp_path / "cache"))
    options = MidiOptions(max_pieces=5)
    manifest = prepare_midi("builtin:bach", tmp_path / "bach", options)
    rolls = [r for s in manifest["splits"] for r in split_rolls(tmp_path / "bach", manifest, s)]
    assert len(rolls) == 5 and manifest["skipped"] == []  # chorales are shorter than 100 quarter notes
    keys = np.concatenate(rolls)
    assert set(np.unique(keys)) == {0.0, 1.0} and 3.5 < keys.sum(1).mean() <= 4.0 and keys.sum(1).max() == 4
    cache_files = list((tmp_path / "cache" / "midi").glob("bach-*.npz"))
    assert len(cache_files) == 1
    written = cache_files[0].stat().st_mtime_ns

    import music21.corpus

    def no_parsing(*args, **kwargs):
        raise AssertionError("music21 parsed a chorale although the cache holds it")

    monkeypatch.setattr(music21.corpus, "parse", no_parsing)
    again = prepare_midi("builtin:bach", tmp_path / "again", options)
    assert cache_files[0].stat().st_mtime_ns == written
    assert again["splits"] == manifest["splits"]
    assert builtin_rolls("bach", options)[0][0][0] == "bach/bwv269"


def test_a_corrupt_midi_file_stops_prepare_and_leaves_the_old_output_alone_or_is_skipped(tmp_path):
    options = MidiOptions()
    good = write_midi(tmp_path / "src" / key_in("train", options), [(60, 0.0, 1.0), (64, 1.0, 2.0)])
    out = tmp_path / "out"
    prepare_midi(str(tmp_path / "src"), out, options)
    before = (out / "manifest.json").read_text()
    (tmp_path / "src" / "broken.mid").write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(SeqlvmError, match=r"broken.mid: not a readable MIDI file") as error:
        prepare_midi(str(tmp_path / "src"), out, options, overwrite=True)
    assert "\n" not in str(error.value) and (out / "manifest.json").read_text() == before
    skipped = prepare_midi(str(tmp_path / "src"), out, MidiOptions(on_error="skip"), overwrite=True)
    assert [Path(s["file"]).name for s in skipped["skipped"]] == ["broken.mid"]
    assert skipped["splits"]["train"]["sequences"] == 1 and json.loads(before)["fingerprint"] != skipped["fingerprint"]
    good.unlink()
    with pytest.raises(SeqlvmError, match="no usable midi sequences"):
        prepare_midi(str(tmp_path / "src"), tmp_path / "empty", MidiOptions(on_error="skip"))


def test_bad_sources_and_options_are_one_line_errors(tmp_path):
    with pytest.raises(SeqlvmError, match="no such file or folder"):
        prepare_midi(str(tmp_path / "missing.mid"), tmp_path / "out", MidiOptions())
    (tmp_path / "notes.txt").write_text("c d e")
    with pytest.raises(SeqlvmError, match="notes.txt: not a .mid/.midi file"):
        prepare_midi(str(tmp_path / "notes.txt"), tmp_path / "out", MidiOptions())
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeqlvmError, match="folder has no .mid or .midi files"):
        prepare_midi(str(tmp_path / "empty"), tmp_path / "out", MidiOptions())
    with pytest.raises(SeqlvmError, match="unknown collection"):
        prepare_midi("builtin:jazz", tmp_path / "out", MidiOptions())
    for bad, flag in ((dict(steps_per_beat=0), "--steps-per-beat"), (dict(time_step=-1.0), "--time-step"),
                      (dict(chunk_steps=-1), "--chunk-steps"), (dict(max_pieces=-2), "--max-pieces"),
                      (dict(on_error="ignore"), "--on-error")):
        with pytest.raises(SeqlvmError, match=flag):
            MidiOptions(**bad).validate()


def test_render_midi_writes_a_piano_roll_image_and_a_midi_file_that_reads_back_as_the_same_roll(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.random((40, KEYS)) ** 4  # probabilities: mostly off, runs of on-steps here and there
    frames[:, [0, KEYS - 1]] = 0.9  # the lowest and highest keys held throughout: one long note each
    paths = render_midi(frames, {"render": {"time_step": 0.25}}, tmp_path / "samples", "sample-0")
    assert [p.name for p in paths] == ["sample-0.png", "sample-0.mid"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    held = [n for n in pretty_midi.PrettyMIDI(str(paths[1])).instruments[0].notes if n.pitch == 21]
    assert len(held) == 1 and held[0].end == pytest.approx(10.0)
    assert np.array_equal(read_midi_roll(paths[1], time_step=0.25), (frames >= 0.5).astype(np.float32))
    with pytest.raises(SeqlvmError, match="expected \\(steps, 88\\)"):
        render_midi(np.zeros((5, 12)), {}, tmp_path, "bad")
