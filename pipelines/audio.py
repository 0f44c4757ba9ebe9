"""`seqlvm prepare audio`: speech waveforms cut into fixed-length segments of raw-sample frames, as in the VRNN
paper (Chung et al. 2015): every file is resampled to one rate, mixed down to mono and cut into consecutive
non-overlapping segments of `segment_seconds`; a segment is one sequence of shape (steps, frame_size).

Sources: a file or folder of .wav/.flac/.ogg files, `builtin:speech-es` / `builtin:speech-ro` (real recorded
phrases from Debian's tuxpaint-stamps-default) and `builtin:flite` (synthetic: Shakespeare sentences read by
the flite synthesiser, cached). `render_audio` turns generated frames back into a wav and a waveform plot.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from math import gcd
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines.errors import SeqlvmError
from pipelines.frames import (ErrorPolicy, Example, FrameOptions, Standardise, cache_root, denormalise,
                              files_fingerprint, write_frame_dataset)
from pipelines.modalities import MODALITIES
from pipelines.work import InProcess

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_LANGUAGES = {"speech-es": "es", "speech-ro": "ro"}
BUILTIN = {
    "speech-es": "Spanish phrases recorded for Tux Paint's stamps (real speech, tuxpaint-stamps-default)",
    "speech-ro": "Romanian phrases recorded for Tux Paint's stamps (real speech, tuxpaint-stamps-default)",
    "flite": "SYNTHETIC: Shakespeare sentences read by the flite synthesiser (voice slt)",
}
FLITE = "flite"
FLITE_VOICE = "slt"
FLITE_WORDS = (4, 20)  # sentences long enough for a segment, short enough that one line does not dominate


@dataclass
class AudioOptions(FrameOptions):
    sample_rate: int = field(default=16000, metadata={
        "help": "sample rate in Hz that every file is resampled to"})
    segment_seconds: float = field(default=0.5, metadata={
        "help": "length of one sequence in seconds (0.5 in the VRNN paper); floored to whole frames"})
    frame_size: int = field(default=200, metadata={
        "help": "samples per frame, i.e. per time step (200 in Chung et al.)"})
    synth_sentences: int = field(default=300, metadata={
        "help": "how many sentences flite reads for builtin:flite"})

    @property
    def segment_frames(self) -> int:
        """Frames per sequence: a segment that does not hold a whole number of frames is floored."""
        return round(self.segment_seconds * self.sample_rate) // self.frame_size

    @property
    def segment_samples(self) -> int:
        return self.segment_frames * self.frame_size

    def validate(self) -> None:
        super().validate()
        if self.sample_rate < 1:
            raise SeqlvmError("--sample-rate must be a positive number of Hz")
        if self.frame_size < 1:
            raise SeqlvmError("--frame-size must be at least 1 sample")
        if self.segment_seconds <= 0 or self.segment_frames < 1:
            raise SeqlvmError(f"--segment-seconds {self.segment_seconds} holds no whole frame of "
                              f"{self.frame_size} samples at {self.sample_rate} Hz")
        if self.synth_sentences < 1:
            raise SeqlvmError("--synth-sentences must be at least 1")


# --- sources: each resolves to (root, files); a file's path relative to root is its split key ---

def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _local_source(path: Path) -> tuple[Path, list[Path]]:
    if path.is_dir():
        files = _audio_files(path)
        if not files:
            raise SeqlvmError(f"{path}: folder has no {'/'.join(AUDIO_SUFFIXES)} files")
        return path, files
    if not path.exists():
        raise SeqlvmError(f"{path}: no such file or folder")
    return path.parent, [path]


def _tuxpaint_source(language: str) -> tuple[Path, list[Path]]:
    files = sorted(TUXPAINT_STAMPS.rglob(f"*_desc_{language}.ogg")) if TUXPAINT_STAMPS.is_dir() else []
    if not files:
        raise SeqlvmError(f"builtin:speech-{language} needs Tux Paint's stamps in {TUXPAINT_STAMPS} "
                          "(apt-get install --no-install-recommends tuxpaint-stamps-default)")
    return TUXPAINT_STAMPS, files


def flite_sentences(count: int) -> list[str]:
    """The first `count` distinct Shakespeare sentences of FLITE_WORDS words starting with a capital, in play
    order."""
    from pipelines.text import split_sentences
    from pipelines.text_sources import play_speeches, shakespeare_files

    chosen: dict[str, None] = {}
    for play in shakespeare_files():
        for speech in play_speeches(play.read_text(encoding="utf-8")):
            for sentence in split_sentences(speech):
                # A leading dash would reach flite's argument parser as an option.
                sentence = sentence.lstrip("-—– ")
                # A lower-case start is a fragment cut at a mid-line "!" or "?", read with the wrong intonation.
                if sentence[:1].isupper() and FLITE_WORDS[0] <= len(sentence.split()) <= FLITE_WORDS[1]:
                    chosen.setdefault(sentence)
                    if len(chosen) == count:
                        return list(chosen)
    return list(chosen)


def _synthesise(flite: str, sentence: str, wav: Path) -> None:
    partial = wav.with_suffix(".partial.wav")  # a killed run must not leave a truncated wav for later runs
    result = subprocess.run([flite, "-voice", FLITE_VOICE, "-t", sentence, "-o", str(partial)],
                            capture_output=True, text=True)
    if result.returncode != 0 or not partial.exists():
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[0]
        raise SeqlvmError(f"flite failed on {sentence!r}: {reason}")
    partial.replace(wav)


def _flite_source(options: AudioOptions, console=None) -> tuple[Path, list[Path]]:
    """Synthesise the sentences once into the cache (one subfolder per voice, count and sentence list)."""
    flite = shutil.which(FLITE)
    if flite is None:
        raise SeqlvmError("builtin:flite needs the flite speech synthesiser (apt-get install flite)")
    sentences = flite_sentences(options.synth_sentences)
    if not sentences:
        raise SeqlvmError(f"builtin:flite: no Shakespeare sentences of {FLITE_WORDS[0]}..{FLITE_WORDS[1]} words")
    digest = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:10]
    folder = cache_root() / "flite" / f"{FLITE_VOICE}-{len(sentences)}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    files = [folder / f"{i:05d}.wav" for i in range(len(sentences))]
    missing = [(s, f) for s, f in zip(sentences, files) if not f.exists()]
    if missing:
        if console:
            console.print(f"synthesising {len(missing)} sentences with flite into {folder}")
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 4) as pool:
            list(pool.map(lambda job: _synthesise(flite, *job), missing))
    return folder, files


def resolve_source(spec: str, options: AudioOptions, console=None) -> tuple[Path, list[Path]]:
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name in TUXPAINT_LANGUAGES:
            return _tuxpaint_source(TUXPAINT_LANGUAGES[name])
        if name == "flite":
            return _flite_source(options, console)
        raise SeqlvmError(f"{spec}: unknown built-in audio corpus (available: "
                          f"{', '.join('builtin:' + n for n in BUILTIN)})")
    return _local_source(Path(spec))


def _without_duplicates(files: list[Path]) -> tuple[list[Path], int]:
    """Drop files whose bytes repeat an earlier file's: a copy under another name could land in another split
    (Tux Paint ships the same recording for several stamps)."""
    seen, kept = set(), []
    for path in files:
        try:
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError as exc:
            raise SeqlvmError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    return kept, len(files) - len(kept)


# --- reading ---

def read_waveform(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of `path` at `sample_rate`. An unreadable file raises ValueError(reason), which the
    caller hands to the error policy."""
    import soundfile as sf
    from scipy.signal import resample_poly

    try:
        samples, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except sf.LibsndfileError as exc:
        raise ValueError(f"not a readable audio file ({exc.error_string.rstrip('.')})") from None
    except (sf.SoundFileError, OSError, RuntimeError) as exc:
        raise ValueError(f"cannot read audio ({exc})") from None
    mono = samples.mean(axis=1)
    if rate != sample_rate and len(mono):
        common = gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // common, rate // common)
    return mono.astype(np.float32)


def segments(waveform: np.ndarray, options: AudioOptions) -> np.ndarray:
    """(segments, steps, frame_size): consecutive non-overlapping segments; a shorter tail is dropped."""
    count = len(waveform) // options.segment_samples
    return waveform[:count * options.segment_samples].reshape(count, options.segment_frames, options.frame_size)


@dataclass(frozen=True)
class AudioFile:
    """One item of an audio corpus: a file, and its path below the source folder (its split key)."""
    path: Path
    key: str


def read_audio_file(options: AudioOptions, item: AudioFile, policy: ErrorPolicy, tally: Counter) -> Iterator[Example]:
    """The segments of one file; `tally` counts the seconds read and the files too short for a segment."""
    try:
        waveform = read_waveform(item.path, options.sample_rate)
    except ValueError as exc:
        policy.failed(item.path, str(exc))
        return
    tally["seconds_read"] += len(waveform) / options.sample_rate
    cut = segments(waveform, options)
    if len(cut) == 0:
        tally["too_short_files"] += 1
    for segment in cut:
        yield Example(item.key, segment)


def _audio_details(files: int, duplicates: int, options: AudioOptions, console, tally: Counter) -> dict:
    too_short = tally["too_short_files"]
    if console and too_short:
        console.print(f"{too_short} files shorter than one segment "
                      f"({options.segment_samples / options.sample_rate:g} s) gave no sequences")
    return {"audio": {"files": files, "duplicate_files": duplicates, "too_short_files": too_short,
                      "seconds_read": round(tally["seconds_read"], 1)}}


def prepare_audio(spec: str, out: str | Path, options: AudioOptions, overwrite: bool = False,
                  console=None, work=InProcess()) -> dict:
    """Prepare `spec` into `out`, one `work` task per pack of files. Returns the manifest; a no-op when `out`
    already holds this exact input."""
    options.validate()
    root, files = resolve_source(spec, options, console)
    files, duplicates = _without_duplicates(files)
    items = [AudioFile(path, path.relative_to(root).as_posix()) for path in files]
    fingerprint = files_fingerprint(files, options, extra=spec)
    synthetic = spec == "builtin:flite"
    return write_frame_dataset(
        out, items, partial(read_audio_file, options), modality="audio", frame_dim=options.frame_size,
        source=spec, fingerprint=fingerprint, options=options, output=MODALITIES["audio"].output,
        standardise=Standardise(dims=list(range(options.frame_size)), scalar=True),
        render={"sample_rate": options.sample_rate, "frame_size": options.frame_size, "synthetic": synthetic},
        details=partial(_audio_details, len(files), duplicates, options, console),
        sizes=[path.stat().st_size for path in files], overwrite=overwrite, console=console, work=work)


# --- rendering generated frames ---

def render_audio(frames: np.ndarray, data_info: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write standardised frames (T, frame_size) as `{stem}.wav` and a waveform plot `{stem}.png`."""
    import soundfile as sf
    from matplotlib.figure import Figure  # a bare Figure renders with Agg and leaves pyplot's state alone

    rate, frame_size = int(data_info["render"]["sample_rate"]), int(data_info["render"]["frame_size"])
    frames = np.asarray(frames).reshape(-1, frame_size)
    waveform = np.clip(denormalise(frames, data_info).reshape(-1), -1.0, 1.0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wav, png = out_dir / f"{stem}.wav", out_dir / f"{stem}.png"
    sf.write(str(wav), waveform, rate)
    figure = Figure(figsize=(8, 2.5), tight_layout=True)
    axes = figure.subplots()
    axes.plot(np.arange(len(waveform)) / rate, waveform, linewidth=0.5)
    axes.set(xlabel="time (s)", ylabel="amplitude", ylim=(-1.05, 1.05), title=stem)
    figure.savefig(png, dpi=100)
    return [wav, png]
