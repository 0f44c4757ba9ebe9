"""`seqlvm prepare audio` on real speech: short flite utterances synthesised per session, Tux Paint recordings when
installed, and copies re-encoded at other rates and channel counts."""
import shutil
import subprocess
from math import ceil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.audio import AudioOptions, prepare_audio, read_waveform, render_audio, resolve_source, segments
from pipelines.errors import SeqlvmError
from pipelines.frames import denormalise
from pipelines.shards import SPLITS, split_of

sf = pytest.importorskip("soundfile")
FLITE = shutil.which("flite")
if FLITE is None:
    pytest.skip("flite is not installed (apt-get install flite)", allow_module_level=True)

SENTENCES = [
    "Now, fair Hippolyta, our nuptial hour draws on apace.",
    "Four happy days bring in another moon.",
    "The course of true love never did run smooth.",
    "Lord, what fools these mortals be, and how the night wears on.",
]
STEPS = 40  # 0.5 s at 16 kHz in frames of 200 samples
TUX_CLIPS = sorted(Path("/usr/share/tuxpaint/stamps").rglob("*_desc_es.ogg"))[:8]


def _flite(text: str, wav: Path) -> Path:
    subprocess.run([FLITE, "-voice", "slt", "-t", text, "-o", str(wav)], check=True, capture_output=True)
    return wav


def _expected_segments(path: Path, rate: int = 16000) -> int:
    info = sf.info(str(path))
    resampled = ceil(info.frames * rate / info.samplerate)  # resample_poly's output length
    return resampled // (STEPS * 200)


def _rows(out: Path, manifest: dict, split: str) -> list[np.ndarray]:
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        table = pq.read_table(out / shard)
        for flat, steps in zip(table.column("frames").to_pylist(), table.column("steps").to_pylist()):
            rows.append(np.asarray(flat, dtype=np.float32).reshape(steps, -1))
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Four 16 kHz mono utterances, one at 22050 Hz stereo (flac), a 0.3 s clip, two 44.1 kHz stereo oggs."""
    from scipy.signal import resample_poly

    root = tmp_path_factory.mktemp("speech")
    (root / "flite").mkdir()
    for i, sentence in enumerate(SENTENCES):
        _flite(sentence, root / "flite" / f"{i}.wav")
    voice, _ = sf.read(str(_flite("Ill met by moonlight, proud Titania.", root / "tmp.wav")))
    (root / "tmp.wav").unlink()
    at_22k = resample_poly(voice, 441, 320)
    sf.write(str(root / "stereo22k.flac"), np.stack([at_22k, 0.5 * at_22k], axis=1), 22050)
    sf.write(str(root / "short.wav"), voice[:4800], 16000)
    (root / "tux").mkdir()
    clips = [c for c in TUX_CLIPS if c.read_bytes() != TUX_CLIPS[0].read_bytes()][:1] + TUX_CLIPS[:1]
    for i, clip in enumerate(clips):
        shutil.copy(clip, root / "tux" / f"{i}.ogg")
    if not clips:  # no Tux Paint: 44.1 kHz stereo from a synthesised voice instead
        at_44k = resample_poly(voice, 441, 160)
        sf.write(str(root / "tux" / "0.ogg"), np.stack([at_44k, at_44k], axis=1), 44100)
    return root


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "speech"
    options = AudioOptions(valid_fraction=0.2, test_fraction=0.2)
    return out, options, prepare_audio(str(corpus), out, options)


def test_options_floor_segments_to_whole_frames_and_reject_empty_ones():
    assert AudioOptions().segment_frames == STEPS and AudioOptions().segment_samples == 8000
    assert AudioOptions(frame_size=256).segment_frames == 31
    with pytest.raises(SeqlvmError, match="holds no whole frame"):
        AudioOptions(segment_seconds=0.01).validate()
    with pytest.raises(SeqlvmError, match="--on-error"):
        AudioOptions(on_error="ignore").validate()
    from dataclasses import fields
    own = [f for f in fields(AudioOptions) if f.name in ("sample_rate", "segment_seconds", "frame_size",
                                                          "synth_sentences")]
    assert len(own) == 4 and all(f.metadata.get("help") for f in own)


def test_resampling_from_other_rates_gives_the_right_length_and_mono(corpus):
    for path in [corpus / "stereo22k.flac", *sorted((corpus / "tux").glob("*.ogg"))]:
        info = sf.info(str(path))
        waveform = read_waveform(path, 16000)
        assert info.channels == 2 and info.samplerate != 16000
        assert waveform.ndim == 1 and waveform.dtype == np.float32
        assert len(waveform) == ceil(info.frames * 16000 / info.samplerate)
    assert segments(np.zeros(8000 * 3 + 7999, np.float32), AudioOptions()).shape == (3, STEPS, 200)


def test_sequences_have_whole_segments_of_every_file(corpus, prepared):
    out, _, manifest = prepared
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".wav", ".flac", ".ogg"))
    expected = sum(_expected_segments(p) for p in files)
    assert expected > len(files)  # the corpus does hold multi-segment files
    assert sum(manifest["splits"][s]["sequences"] for s in SPLITS) == expected
    assert all(row.shape == (STEPS, 200) for s in SPLITS for row in _rows(out, manifest, s))
    assert manifest["audio"]["too_short_files"] == 1 and manifest["audio"]["files"] == len(files)
    assert manifest["frame_dim"] == 200 and manifest["output"] == "gauss" and manifest["modality"] == "audio"
    assert manifest["render"] == {"sample_rate": 16000, "frame_size": 200, "synthetic": False}


def test_training_split_is_standardised_with_its_own_statistics(corpus, prepared):
    out, options, manifest = prepared
    train = np.concatenate([row.reshape(-1) for row in _rows(out, manifest, "train")]).astype(np.float64)
    assert abs(train.mean()) < 1e-4 and abs(train.std() - 1) < 1e-4
    # The statistics are those of the raw samples of exactly the files hashed into the training split.
    raw = [segments(read_waveform(p, 16000), options).reshape(-1) for p in sorted(corpus.rglob("*.*"))
           if split_of(p.relative_to(corpus).as_posix(), 0.2, 0.2, 0) == "train"]
    raw = np.concatenate(raw).astype(np.float64)
    norm = manifest["normalisation"]
    assert norm["scalar"] and norm["dims"] == list(range(200))
    assert np.allclose(norm["mean"], raw.mean(), atol=1e-6) and np.allclose(norm["std"], raw.std(), rtol=1e-4)


def test_denormalised_segment_matches_a_direct_read_and_resample(corpus, prepared):
    from scipy.signal import resample_poly

    out, _, manifest = prepared
    samples, rate = sf.read(str(corpus / "stereo22k.flac"))
    direct = resample_poly(samples.mean(axis=1), 320, 441)[8000:16000]  # the file's second segment
    rows = [denormalise(row, manifest).reshape(-1) for s in SPLITS for row in _rows(out, manifest, s)]
    assert sum(np.allclose(row, direct, atol=1e-5) for row in rows) == 1


def test_rerun_with_the_same_input_is_a_no_op(corpus, prepared):
    out, options, manifest = prepared
    shard = out / manifest["splits"]["train"]["shards"][0]
    before = shard.stat().st_mtime_ns
    again = prepare_audio(str(corpus), out, options)
    assert again["fingerprint"] == manifest["fingerprint"] and again["audio"] == manifest["audio"]
    assert shard.stat().st_mtime_ns == before


def test_corrupt_file_stops_and_leaves_the_old_output_alone(corpus, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(corpus / "flite", source)
    out = tmp_path / "data"
    prepare_audio(str(source), out, AudioOptions())
    old = (out / "manifest.json").read_bytes()
    (source / "x.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(SeqlvmError) as error:
        prepare_audio(str(source), out, AudioOptions(), overwrite=True)
    message = str(error.value)
    assert "x.wav" in message and "not a readable audio file" in message and "\n" not in message
    assert (out / "manifest.json").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src"]  # no temporary folder left behind


def test_corrupt_file_is_skipped_and_reported_on_request(corpus, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(corpus / "flite", source)
    (source / "x.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    manifest = prepare_audio(str(source), tmp_path / "data", AudioOptions(on_error="skip"))
    assert [Path(s["file"]).name for s in manifest["skipped"]] == ["x.wav"]
    expected = sum(_expected_segments(p) for p in (corpus / "flite").glob("*.wav"))
    assert sum(manifest["splits"][s]["sequences"] for s in SPLITS) == expected


def test_missing_or_empty_sources_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(SeqlvmError, match=r"folder has no \.wav/\.flac/\.ogg files"):
        prepare_audio(str(tmp_path), tmp_path / "out", AudioOptions())
    with pytest.raises(SeqlvmError, match="no such file or folder"):
        prepare_audio(str(tmp_path / "nope"), tmp_path / "out", AudioOptions())
    with pytest.raises(SeqlvmError, match="unknown built-in audio corpus"):
        prepare_audio("builtin:speech-xx", tmp_path / "out", AudioOptions())
    short = tmp_path / "short"
    short.mkdir()
    sf.write(str(short / "a.wav"), np.zeros(1000, np.float32), 16000)
    with pytest.raises(SeqlvmError, match="no usable audio sequences"):
        prepare_audio(str(short), tmp_path / "out", AudioOptions())
    assert not (tmp_path / "out").exists()


def test_tux_paint_sources(monkeypatch, tmp_path):
    if TUX_CLIPS:
        root, files = resolve_source("builtin:speech-ro", AudioOptions())
        assert len(files) > 500 and all(f.name.endswith("_desc_ro.ogg") for f in files)
    monkeypatch.setattr("pipelines.audio.TUXPAINT_STAMPS", tmp_path / "absent")
    with pytest.raises(SeqlvmError, match="apt-get install --no-install-recommends tuxpaint-stamps-default"):
        resolve_source("builtin:speech-es", AudioOptions())


def test_render_audio_writes_a_wav_and_a_plot(prepared, tmp_path):
    out, _, manifest = prepared
    frames = _rows(out, manifest, "train")[0]
    paths = render_audio(frames, manifest, tmp_path / "samples", "sample-0")
    assert [p.name for p in paths] == ["sample-0.wav", "sample-0.png"]
    wave, rate = sf.read(str(paths[0]), dtype="float32")
    assert rate == 16000 and wave.shape == (STEPS * 200,)
    expected = np.clip(denormalise(frames, manifest).reshape(-1), -1, 1)
    assert np.allclose(wave, expected, atol=1 / 2**15)  # PCM_16 quantisation
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_builtin_flite_synthesises_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEQLVM_CACHE", str(tmp_path / "cache"))
    options = AudioOptions(synth_sentences=4, valid_fraction=0, test_fraction=0)
    manifest = prepare_audio("builtin:flite", tmp_path / "a", options)
    wavs = sorted((tmp_path / "cache" / "flite").glob("*/*.wav"))
    assert len(wavs) == 4 and manifest["audio"]["files"] == 4
    assert manifest["render"]["synthetic"] is True and manifest["splits"]["train"]["sequences"] >= 4
    lines = (wavs[0].parent / "sentences.txt").read_text().splitlines()
    assert len(lines) == 4 and all(4 <= len(line.split()) <= 20 and line[0].isupper() for line in lines)
    written = [w.stat().st_mtime_ns for w in wavs]
    again = prepare_audio("builtin:flite", tmp_path / "b", options)
    assert [w.stat().st_mtime_ns for w in wavs] == written
    assert again["fingerprint"] == manifest["fingerprint"]
