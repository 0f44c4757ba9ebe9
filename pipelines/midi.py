"""`seqlvm prepare midi`: polyphonic music as 88-key binary piano rolls (MIDI notes 21..108, one (T, 88) row per
time step), from MIDI files, the Boulanger-Lewandowski pickles, the SRNN authors' npz files or music21's corpus.

A note sounds at a step when it is on at the step's time: steps are beats (from pretty_midi's beat tracker, or
music21's quarter notes) subdivided `steps_per_beat` times, or every `time_step` seconds. Training and validation
pieces are cut into chunks of `chunk_steps` as in the SRNN setup; test pieces stay whole. `render_midi` turns
frames back into a piano-roll image and a MIDI file.
"""
from __future__ import annotations

import builtins
import json
import os
import pickle
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from pipelines.errors import SeqlvmError
from pipelines.frames import (ErrorPolicy, Example, FrameOptions, cache_root, files_fingerprint, frame_split,
                              write_frame_dataset)
from pipelines.modalities import MODALITIES
from pipelines.shards import is_up_to_date
from pipelines.work import InProcess

KEYS = 88
LOWEST_NOTE, HIGHEST_NOTE = 21, 108
NPZ_SPLITS = {"train": "x_train", "valid": "x_valid", "test": "x_test"}
MIDI_SUFFIXES = (".mid", ".midi")
PICKLE_SUFFIXES = (".pickle", ".pkl")
BUILTIN = {"bach": "music21's Bach chorales (Riemenschneider numbering, duplicates once; 4 parts)",
           "folk": "music21's Ryan's Mammoth Collection of fiddle tunes (ABC, monophonic)"}
SECONDS_PER_BEAT = 0.5  # 120 beats a minute: the tempo written into rendered MIDI when steps are beats
# Sample a little after each step's start, so onsets moved by MIDI tick rounding (or played slightly late) still
# count at their step, and a note released just as the next step starts (legato) does not.
SAMPLE_DELAY = 0.05  # of a step
PIECES_PER_TASK = 64  # pieces of a built-in collection's cache read by one task
CACHE_VERSION = 1  # bump when the music21 conversion changes, so stale caches are not read


@dataclass
class MidiOptions(FrameOptions):
    steps_per_beat: int = field(default=1, metadata={
        "help": "time steps per beat (per quarter note for builtin:); 1 = quarter notes as in the "
                "Boulanger-Lewandowski sets"})
    time_step: float = field(default=0.0, metadata={
        "help": "MIDI files: seconds per time step instead of beats, when above 0"})
    chunk_steps: int = field(default=100, metadata={
        "help": "cut training and validation pieces into chunks of this many steps (test pieces stay whole); "
                "0 = never cut"})
    max_pieces: int = field(default=0, metadata={
        "help": "read at most this many pieces (per split for .pickle/.npz sources); 0 = all"})

    def validate(self) -> None:
        super().validate()
        if self.steps_per_beat < 1:
            raise SeqlvmError("--steps-per-beat must be at least 1")
        if not (self.time_step >= 0 and np.isfinite(self.time_step)):
            raise SeqlvmError("--time-step must be 0 (beats) or a positive number of seconds")
        if self.chunk_steps < 0:
            raise SeqlvmError("--chunk-steps must be 0 (never cut) or a positive number of steps")
        if self.max_pieces < 0:
            raise SeqlvmError("--max-pieces must be 0 (all) or a positive number")


class _Unreadable(Exception):
    """A piece that cannot be turned into a roll; its message is the reason given to the error policy."""


# --- rolls from notes ---

def _roll(notes: Iterable[tuple[float, float, int]], step_starts: np.ndarray,
          step_lengths: np.ndarray) -> np.ndarray:
    """(steps, 88) with a key on where a (start, end, pitch) note is on at the step's sampling time; pitches
    outside 21..108 are dropped."""
    sample_times = step_starts + SAMPLE_DELAY * step_lengths
    roll = np.zeros((len(step_starts), KEYS), dtype=np.float32)
    for start, end, pitch in notes:
        if LOWEST_NOTE <= pitch <= HIGHEST_NOTE:
            first, last = np.searchsorted(sample_times, [start, end])
            roll[first:last, pitch - LOWEST_NOTE] = 1.0
    return roll


def _beat_grid(beats: np.ndarray, end: float, steps_per_beat: int) -> tuple[np.ndarray, np.ndarray]:
    """Step start times and lengths: each beat divided into `steps_per_beat`, up to `end`."""
    beat_lengths = np.diff(beats, append=beats[-1] + (beats[-1] - beats[-2] if len(beats) > 1 else SECONDS_PER_BEAT))
    fractions = np.arange(steps_per_beat) / steps_per_beat
    starts = (beats[:, None] + beat_lengths[:, None] * fractions).reshape(-1)
    lengths = np.repeat(beat_lengths / steps_per_beat, steps_per_beat)
    keep = starts < end
    return starts[keep], lengths[keep]


def read_midi_roll(path: str | Path, steps_per_beat: int = 1, time_step: float = 0.0) -> np.ndarray:
    """The (steps, 88) roll of a MIDI file, drums excluded; steps are beats / `steps_per_beat`, or `time_step`
    seconds when above 0. Raises SeqlvmError naming the file when it cannot be read."""
    try:
        return _midi_roll(Path(path), steps_per_beat, time_step)
    except _Unreadable as exc:
        raise SeqlvmError(f"{path}: {exc}") from None


def _midi_roll(path: Path, steps_per_beat: int, time_step: float) -> np.ndarray:
    import pretty_midi

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pretty_midi warns about tempo events on other tracks
            midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # mido and pretty_midi raise many types (OSError, EOFError, KeyError, ValueError...)
        raise _Unreadable(f"not a readable MIDI file ({type(exc).__name__}: {_first_line(exc)})") from None
    notes = [(n.start, n.end, n.pitch) for instrument in midi.instruments if not instrument.is_drum
             for n in instrument.notes if n.end > n.start]
    if not notes:
        raise _Unreadable("no notes (drums aside)")
    end = max(note_end for _, note_end, _ in notes)
    if time_step > 0:
        starts = np.arange(0.0, end, time_step)
        lengths = np.full(len(starts), time_step)
    else:
        starts, lengths = _beat_grid(np.asarray(midi.get_beats()), end, steps_per_beat)
    return _roll(notes, starts, lengths)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


# --- examples: a piece's roll, its split, and chunks of it ---

def _piece_examples(key: str, roll: np.ndarray, split: str | None, options: MidiOptions) -> Iterator[Example]:
    split = split or frame_split(Example(key, roll), options)
    if split == "test" or not options.chunk_steps:
        yield Example(key, roll, split)
        return
    for start in range(0, len(roll), options.chunk_steps):
        yield Example(key, roll[start:start + options.chunk_steps], split)


def _midi_files(source: Path, max_pieces: int) -> list[Path]:
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
        if not files:
            raise SeqlvmError(f"{source}: folder has no .mid or .midi files")
    else:
        files = [source]
    return files[:max_pieces] if max_pieces else files


@dataclass(frozen=True)
class MidiFile:
    """One item of a MIDI corpus: a file, and its split key (its path below the source folder)."""
    path: Path
    key: str


def read_midi_file(options: MidiOptions, item: MidiFile, policy: ErrorPolicy, tally) -> Iterator[Example]:
    try:
        roll = _midi_roll(item.path, options.steps_per_beat, options.time_step)
    except _Unreadable as exc:
        policy.failed(item.path, str(exc))
        return
    yield from _piece_examples(item.key, roll, None, options)


# Only these globals may be loaded: the pickles hold nothing but lists, tuples, sets and numbers, and refusing
# every other global stops a crafted pickle from calling os.system (or anything else) while it is loaded.
_PLAIN_DATA = {"list", "dict", "tuple", "set", "frozenset", "int", "float", "str"}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module in ("builtins", "__builtin__") and name in _PLAIN_DATA:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a piano-roll pickle does not need")


def load_plain_pickle(path: Path):
    """Unpickle a file of plain lists, dicts, tuples, sets and numbers; anything else is refused."""
    try:
        with open(path, "rb") as handle:
            return _PlainDataUnpickler(handle, encoding="latin1").load()
    except Exception as exc:  # pickle raises almost anything on bad input (UnpicklingError, EOFError, KeyError...)
        raise _Unreadable(f"not a readable piano-roll pickle ({type(exc).__name__}: {_first_line(exc)})") from None


def _pickled_roll(sequence) -> np.ndarray:
    """A Boulanger-Lewandowski sequence (a list of steps, each a collection of MIDI note numbers) as a roll."""
    if not isinstance(sequence, (list, tuple)) or not sequence:
        raise _Unreadable(f"a {type(sequence).__name__} where a non-empty list of time steps was expected")
    roll = np.zeros((len(sequence), KEYS), dtype=np.float32)
    for step, notes in enumerate(sequence):
        if not isinstance(notes, (list, tuple, set, frozenset)):
            raise _Unreadable(f"step {step} is a {type(notes).__name__}, not a collection of notes")
        for note in notes:
            if not isinstance(note, (int, float)) or isinstance(note, bool) or note != int(note) \
                    or not LOWEST_NOTE <= note <= HIGHEST_NOTE:
                raise _Unreadable(f"step {step} has note {note!r}, not a MIDI note number in 21..108")
            roll[step, int(note) - LOWEST_NOTE] = 1.0
    return roll


def read_pickle_file(options: MidiOptions, path: Path, policy: ErrorPolicy, tally) -> Iterator[Example]:
    """The pieces of a Boulanger-Lewandowski pickle (one item: the splits are the file's own)."""
    try:
        data = load_plain_pickle(path)
        if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in NPZ_SPLITS):
            raise _Unreadable("not a dict of train, valid and test lists of sequences")
    except _Unreadable as exc:
        policy.failed(path, str(exc))
        return
    for split in NPZ_SPLITS:
        for index, sequence in enumerate(data[split][:options.max_pieces or None]):
            try:
                roll = _pickled_roll(sequence)
            except _Unreadable as exc:
                policy.failed(f"{path} ({split} sequence {index})", str(exc))
                continue
            yield from _piece_examples(f"{path.name}/{split}/{index}", roll, split, options)


def read_npz_file(options: MidiOptions, path: Path, policy: ErrorPolicy, tally) -> Iterator[Example]:
    """The pieces of an npz of padded rolls (one item: the splits are the file's own)."""
    try:
        splits = read_npz_rolls(path)
    except SeqlvmError as exc:
        policy.failed(path, str(exc).removeprefix(f"{path}: "))
        return
    for split, rolls in splits.items():
        for index, roll in enumerate(rolls[:options.max_pieces or None]):
            if not np.isin(roll, (0.0, 1.0)).all():
                policy.failed(f"{path} ({split} sequence {index})", "values other than 0 and 1")
                continue
            yield from _piece_examples(f"{path.name}/{split}/{index}", roll, split, options)


def read_npz_rolls(path: str | Path) -> dict[str, list[np.ndarray]]:
    """{split: [roll (T, 88)]} from an npz of padded roll arrays; the test split is cut to `mask_test`."""
    path = Path(path)
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise SeqlvmError(f"{path}: not a readable npz file ({exc})") from None
    missing = [key for key in NPZ_SPLITS.values() if key not in data.files]
    if missing:
        raise SeqlvmError(f"{path}: no {missing[0]} array (expected {', '.join(NPZ_SPLITS.values())})")
    splits = {}
    for split, key in NPZ_SPLITS.items():
        rolls = data[key].astype(np.float32)
        if rolls.ndim != 3 or rolls.shape[2] != KEYS:
            raise SeqlvmError(f"{path}: {key} has shape {rolls.shape}, expected (sequences, steps, {KEYS})")
        lengths = (data["mask_test"].sum(1).astype(int) if split == "test" and "mask_test" in data.files
                   else np.full(len(rolls), rolls.shape[1]))
        splits[split] = [roll[:n] for roll, n in zip(rolls, lengths)]
    return splits


# --- music21's corpus, converted once and cached ---

def _music21():
    try:
        import music21
    except ImportError:
        raise SeqlvmError("builtin: collections need the `music21` package (pip install music21)") from None
    return music21


def _collection(name: str) -> list[tuple[str, str | Path]]:
    """(piece name, what music21's corpus.parse reads) for a built-in collection."""
    music21 = _music21()
    if name == "bach":
        from music21.corpus import chorales
        # The Riemenschneider numbering lists a few chorales twice; one copy each keeps the splits disjoint.
        names = dict.fromkeys(chorales.Iterator(returnType="filename"))
        return [(piece, piece) for piece in names]
    paths = sorted(p for p in music21.corpus.getPaths(fileExtensions=("abc",)) if p.parent.name == "ryansMammoth")
    return [(f"ryansMammoth/{p.stem}", p) for p in paths]


def _score_roll(score, steps_per_beat: int) -> np.ndarray:
    """All parts' pitches sounding at each step of quarter notes / `steps_per_beat` (chord symbols ignored)."""
    from music21 import harmony

    if hasattr(score, "scores"):  # an ABC file with several tunes: the first one
        if not score.scores:
            raise _Unreadable("no tunes")
        score = score.scores[0]
    notes = [(float(element.offset), float(element.offset + element.quarterLength), pitch.midi)
             for element in score.flatten().notes if not isinstance(element, harmony.Harmony)
             for pitch in element.pitches]
    if not notes:
        raise _Unreadable("no notes")
    steps = int(np.ceil(max(end for _, end, _ in notes) * steps_per_beat - 1e-9))
    return _roll(notes, np.arange(steps) / steps_per_beat, np.full(steps, 1.0 / steps_per_beat))


def _convert_collection(name: str, options: MidiOptions, policy: ErrorPolicy, console) -> list[tuple[str, np.ndarray]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    music21 = _music21()
    pieces = _collection(name)[:options.max_pieces or None]
    rolls = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=console is None, transient=True) as bar:
        task = bar.add_task(f"builtin:{name}: converting with music21 (once; cached)", total=len(pieces))
        for piece, source in pieces:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    score = music21.corpus.parse(source)
                rolls.append((piece, _score_roll(score, options.steps_per_beat)))
            except _Unreadable as exc:
                policy.failed(piece, str(exc))
            except Exception as exc:  # music21's parsers raise many types on a bad file
                policy.failed(piece, f"music21 cannot parse it ({type(exc).__name__}: {_first_line(exc)})")
            bar.advance(task)
    return rolls


def _cache_file(name: str, options: MidiOptions) -> Path:
    version = _music21().__version__
    return (cache_root() / "midi" / f"{name}-{options.steps_per_beat}spb-{options.max_pieces or 'all'}"
                                   f"-music21-{version}-v{CACHE_VERSION}.npz")


def _save_cache(path: Path, rolls: list[tuple[str, np.ndarray]], skipped: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_file = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    keys = np.concatenate([roll for _, roll in rolls]) if rolls else np.zeros((0, KEYS))
    with open(partial_file, "wb") as handle:
        np.savez_compressed(handle, names=np.array([piece for piece, _ in rolls], dtype=str),
                            lengths=np.array([len(roll) for _, roll in rolls], dtype=np.int64),
                            keys=keys.astype(np.uint8), skipped=np.array([json.dumps(skipped)]))
    os.replace(partial_file, path)


def _load_cache(path: Path, pieces: slice = slice(None)) -> tuple[list[tuple[str, np.ndarray]], list[dict]] | None:
    """([(piece name, roll)] of the `pieces` of a cache, the pieces music21 could not read), or None when the cache
    is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names, lengths, keys = data["names"].tolist(), data["lengths"], data["keys"]
            ends = np.cumsum(lengths)
            rolls = [(names[i], keys[ends[i] - lengths[i]:ends[i]].astype(np.float32))
                     for i in range(len(names))[pieces]]
            return rolls, json.loads(str(data["skipped"][0]))
    except (OSError, ValueError, KeyError, IndexError, json.JSONDecodeError):
        return None


def _cached_piece_count(path: Path) -> int:
    with np.load(path, allow_pickle=False) as data:
        return len(data["lengths"])  # only this small array is read


def builtin_cache(name: str, options: MidiOptions, console=None) -> Path:
    """The cache file of a built-in collection converted with these options, converting it first unless an
    earlier run did. Stops at the first unreadable piece when options.on_error is "stop"."""
    if name not in BUILTIN:
        raise SeqlvmError(f"builtin:{name}: unknown collection (available: {', '.join(BUILTIN)})")
    path = _cache_file(name, options)
    if _load_cache(path, slice(0)) is None:
        policy = ErrorPolicy(options.on_error)
        _save_cache(path, _convert_collection(name, options, policy, console), policy.skipped)
    return path


def builtin_rolls(name: str, options: MidiOptions, console=None) -> tuple[list[tuple[str, np.ndarray]], list[dict]]:
    """[(piece name, roll)] of a built-in collection and the pieces music21 could not read, from the cache when
    this collection was converted with these options before."""
    return _load_cache(builtin_cache(name, options, console))


@dataclass(frozen=True)
class CachedPieces:
    """One item of a built-in collection: a run of pieces of its cache file. The first also reports the pieces
    music21 could not read, so they are listed once, first, as when the collection was converted."""
    cache: Path
    first: int
    stop: int

    @property
    def reports_skipped(self) -> bool:
        return self.first == 0


def cached_pieces(cache: Path) -> list[CachedPieces]:
    count = _cached_piece_count(cache)
    return [CachedPieces(cache, first, min(first + PIECES_PER_TASK, count))
            for first in range(0, max(count, 1), PIECES_PER_TASK)]


def read_cached_pieces(options: MidiOptions, item: CachedPieces, policy: ErrorPolicy, tally) -> Iterator[Example]:
    if not item.cache.exists():
        raise SeqlvmError(f"{item.cache}: not on the node this task ran on; on a cluster, SEQLVM_CACHE must be a "
                          "folder every node mounts")
    loaded = _load_cache(item.cache, slice(item.first, item.stop))
    if loaded is None:
        raise SeqlvmError(f"{item.cache}: damaged cache of converted pieces; delete it and prepare again")
    rolls, skipped = loaded
    if item.reports_skipped:
        for failure in skipped:
            policy.failed(failure["file"], failure["reason"])
    for piece, roll in rolls:
        yield from _piece_examples(piece, roll, None, options)


# --- prepare ---

def _check_fixed_grid(spec: str, options: MidiOptions) -> None:
    if options.steps_per_beat != 1 or options.time_step:
        raise SeqlvmError(f"{spec}: its rolls are already quantised; --steps-per-beat and --time-step do not apply")


@dataclass(frozen=True)
class MidiReader:
    """How a source is read: its items, the pure function reading one, and what identifies the input."""
    items: list
    read_item: Callable
    fingerprint: str
    seconds_per_step: float
    sizes: list[int] | None = None  # the items' sizes in bytes, to read small files in packs


def _builtin_reader(spec: str, out: str | Path, options: MidiOptions, console) -> MidiReader:
    name = spec.split(":", 1)[1]
    if options.time_step:
        raise SeqlvmError(f"{spec}: steps are quarter notes / --steps-per-beat; --time-step is for MIDI files")
    fingerprint = files_fingerprint([], options, extra=f"{spec} music21 {_music21().__version__}")
    # Converted on the driver once (music21 is slow) and cached; the tasks read runs of pieces from the cache.
    items = [] if is_up_to_date(out, fingerprint) else cached_pieces(builtin_cache(name, options, console))
    return MidiReader(items, partial(read_cached_pieces, options), fingerprint,
                      SECONDS_PER_BEAT / options.steps_per_beat)


def _file_reader(spec: str, options: MidiOptions) -> MidiReader:
    source = Path(spec)
    if not source.exists():
        raise SeqlvmError(f"{source}: no such file or folder")
    suffix = source.suffix.lower()
    if source.is_dir() or suffix in MIDI_SUFFIXES:
        files = _midi_files(source, options.max_pieces)
        # Splits hash each file's path below the source folder: the fingerprint must change with them.
        paths = "\n".join(p.relative_to(source).as_posix() for p in files) if source.is_dir() else ""
        items = [MidiFile(p, p.relative_to(source).as_posix() if source.is_dir() else p.name) for p in files]
        return MidiReader(items, partial(read_midi_file, options),
                          files_fingerprint(files, options, extra=f"{spec}\n{paths}"),
                          options.time_step or SECONDS_PER_BEAT / options.steps_per_beat,
                          [path.stat().st_size for path in files])
    if suffix in PICKLE_SUFFIXES or suffix == ".npz":
        _check_fixed_grid(spec, options)
        return MidiReader([source], partial(read_npz_file if suffix == ".npz" else read_pickle_file, options),
                          files_fingerprint([source], options, extra=spec), SECONDS_PER_BEAT)
    raise SeqlvmError(f"{source}: not a .mid/.midi file or folder, a .pickle/.pkl, an .npz or "
                      f"builtin:{'|'.join(BUILTIN)}")


def prepare_midi(spec: str, out: str | Path, options: MidiOptions, overwrite: bool = False, console=None,
                 work=InProcess()) -> dict:
    """Prepare piano rolls from `spec` (a .mid/.midi file or folder, a .pickle/.pkl, an .npz, builtin:bach or
    builtin:folk) into `out`, one `work` task per pack of files (or run of cached pieces). Returns the manifest; a no-op
    when `out` already holds this exact input."""
    options.validate()
    reader = (_builtin_reader(spec, out, options, console) if spec.startswith("builtin:")
              else _file_reader(spec, options))
    render = {"time_step": reader.seconds_per_step, "lowest_note": LOWEST_NOTE, "program": 0}
    return write_frame_dataset(out, reader.items, reader.read_item, modality="midi", frame_dim=KEYS, source=spec,
                               fingerprint=reader.fingerprint, options=options, output=MODALITIES["midi"].output,
                               render=render, sizes=reader.sizes, overwrite=overwrite, console=console, work=work)


# --- rendering ---

def _note_runs(keys: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """(pitch, first step, steps) for each run of consecutive on-steps of each key."""
    padded = np.pad(keys.astype(np.int8), ((1, 1), (0, 0)))
    changes = np.diff(padded, axis=0)
    for key in range(keys.shape[1]):
        onsets, offsets = np.flatnonzero(changes[:, key] == 1), np.flatnonzero(changes[:, key] == -1)
        for first, stop in zip(onsets, offsets):
            yield key + LOWEST_NOTE, int(first), int(stop - first)


def render_midi(frames: np.ndarray, data_info: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write frames (T, 88) of 0/1 or probabilities as `{stem}.png` (the piano roll as given) and `{stem}.mid`
    (keys at 0.5 or above held as notes, consecutive steps merged). Returns the paths written."""
    import pretty_midi
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[1] != KEYS:
        raise SeqlvmError(f"{stem}: frames of shape {frames.shape}, expected (steps, {KEYS})")
    render = data_info.get("render") or {}
    seconds_per_step = float(render.get("time_step", SECONDS_PER_BEAT))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    figure = Figure(figsize=(max(6.0, min(24.0, len(frames) / 16)), 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(frames.T, origin="lower", aspect="auto", cmap="Greys", vmin=0.0, vmax=1.0,
                        interpolation="nearest", extent=(0, len(frames), LOWEST_NOTE - 0.5, HIGHEST_NOTE + 0.5))
    octaves = np.arange(24, HIGHEST_NOTE + 1, 12)
    axes.set_yticks(octaves, [f"C{pitch // 12 - 1} ({pitch})" for pitch in octaves])
    axes.set_xlabel(f"time step ({seconds_per_step:g} s each)")
    axes.set_ylabel("MIDI pitch")
    axes.set_title(stem)
    figure.colorbar(image, ax=axes, label="on / probability")
    figure.tight_layout()
    png = out_dir / f"{stem}.png"
    figure.savefig(png, dpi=100)

    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=int(render.get("program", 0)), name="piano")
    for pitch, first, steps in _note_runs(frames >= 0.5):
        piano.notes.append(pretty_midi.Note(velocity=80, pitch=pitch, start=first * seconds_per_step,
                                            end=(first + steps) * seconds_per_step))
    piano.notes.sort(key=lambda note: (note.start, note.pitch))
    midi.instruments.append(piano)
    mid = out_dir / f"{stem}.mid"
    midi.write(str(mid))
    return [png, mid]
