"""`seqlvm prepare text`: sentences from local files, the Hugging Face hub or a packaged corpus, into
token-id Parquet shards with a vocabulary and a manifest.

Two passes over the source's items (count the training split's words, then encode), each pack of items a task that
runs in this process or on Ray (pipelines/work.py); memory stays bounded by an item and the vocabulary, not the corpus.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from pipelines.errors import SeqlvmError
from pipelines.manifest import merged_splits, write_manifest
from pipelines.progress import task_progress
from pipelines.shards import (SPLITS, Folder, ShardWriter, SplitSummary, atomic_output, is_up_to_date, read_manifest,
                             split_of)
from pipelines.text_sources import (BUILTIN, InputFile, TextItem, file_items, fingerprint, hf_items, input_files,
                                    item_blocks, shakespeare_files)
from pipelines.vocab import SPECIALS, UNK_ID, VOCAB_FILE, Vocab
from pipelines.work import InProcess, packed

TEXT_SCHEMA = pa.schema([("ids", pa.list_(pa.int32())), ("length", pa.int32())])
FORMAT = "seqlvm-text/1"

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


@dataclass(frozen=True)
class Source:
    """A text source and its options: the items it is read in and how an item becomes token lists."""
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

    def files(self) -> list[InputFile]:
        if self.kind == "builtin":
            name = self.spec.split(":", 1)[1]
            if name not in BUILTIN:
                raise SeqlvmError(f"{self.spec}: unknown built-in corpus (available: {', '.join(BUILTIN)})")
            return [InputFile(str(path), f"{path.parent.name}/{path.name}", path.stat().st_size,
                              path.stat().st_mtime_ns) for path in shakespeare_files()]
        return input_files(self.spec) if self.kind == "files" else []

    def items(self, files: list[InputFile]) -> list[tuple[TextItem, ...]]:
        """The source's items in packs, a task each."""
        if self.kind == "builtin":
            return packed([TextItem("play", file.location) for file in files], [file.size for file in files])
        if self.kind == "hf":
            return hf_items(self.spec[3:], self.options.hf_split)
        return file_items(files, self.options.encoding)

    def sentences(self, item: TextItem) -> Iterator[list[str]]:
        """The item's token lists within the length limits, or fixed-length fragments of its running text."""
        opts = self.options
        blocks = item_blocks(item, self.layout(), opts.encoding, opts.hf_split, opts.hf_text_column)
        if opts.fragment_length:
            yield from _fragments(blocks, opts)
            return
        prose = self.layout() == "prose"
        for block in blocks:
            for sentence in (split_sentences(block) if prose else [block]):
                tokens = tokenize(sentence, opts)
                if opts.min_length <= len(tokens) <= opts.max_length:
                    yield tokens


def _fragments(blocks: Iterator[str], options: TextOptions) -> Iterator[list[str]]:
    """An item's blocks as one stream of tokens (a space between blocks at character level), cut into pieces of
    exactly `fragment_length` units; the remainder at the item's end is dropped."""
    size, pending = options.fragment_length, []
    for block in blocks:
        if pending and options.unit == "char":
            pending.append(" ")
        pending.extend(tokenize(block, options))
        while len(pending) >= size:
            yield pending[:size]
            del pending[:size]


def _assign_split(tokens: list[str], options: TextOptions) -> str:
    return split_of(" ".join(tokens), options.valid_fraction, options.test_fraction, options.split_seed)


def _sentences(pack: tuple[TextItem, ...], source: Source) -> Iterator[list[str]]:
    for item in pack:
        yield from source.sentences(item)


def count_training_tokens(pack: tuple[TextItem, ...], source: Source) -> Counter:
    """Pass 1, one pack: how often each token occurs in its training-split sentences."""
    counts: Counter = Counter()
    for tokens in _sentences(pack, source):
        if _assign_split(tokens, source.options) == "train":
            counts.update(tokens)
    return counts


def vocab_of(counts: Counter, options: TextOptions) -> Vocab:
    """The specials, then the most frequent tokens (ties by the token, so the vocabulary never depends on the order
    in which items were counted)."""
    for special in SPECIALS:
        counts.pop(special, None)
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:options.vocab_size - len(SPECIALS)]
    return Vocab(list(SPECIALS) + [w for w, c in ranked if c >= options.min_count])


def write_pack(indexed: tuple[int, tuple[TextItem, ...]], source: Source, words: list[str],
               folder: Folder) -> dict[str, SplitSummary]:
    """Pass 2, one pack: its sentences encoded into its own shards of each split."""
    index, pack = indexed
    vocab = Vocab(words)
    writers = {s: ShardWriter(folder, s, TEXT_SCHEMA, source.options.shard_size, prefix=f"part-{index:05d}")
               for s in SPLITS}
    for tokens in _sentences(pack, source):
        ids = vocab.encode(tokens)
        writer = writers[_assign_split(tokens, source.options)]
        writer.add(ids=ids, length=len(ids))
        writer.summary.unknown_steps += sum(1 for i in ids if i == UNK_ID)
    for writer in writers.values():
        writer.flush()
    return {s: w.summary for s, w in writers.items()}


def prepare_text(spec: str, out: str | Path, options: TextOptions, overwrite: bool = False, console=None,
                 work=InProcess()) -> dict:
    """Prepare `spec` into `out`, item by item with `work` (in this process by default, or `OnRay()`). Returns the
    manifest; a no-op when `out` already holds this exact input."""
    options.validate()
    source = Source(spec, options)
    files = source.files()
    digest = fingerprint(spec, options, files)
    if is_up_to_date(out, digest):
        if console:
            console.print(f"{out}: already prepared from this input with these options; nothing to do")
        return read_manifest(out)
    packs = source.items(files)
    started = time.time()
    with atomic_output(out, overwrite) as staging, task_progress(console) as bar:
        task = bar.add_task("counting words", total=len(packs))
        counts: Counter = Counter()
        for _, item_counts in work.map(partial(count_training_tokens, source=source), packs):
            counts.update(item_counts)
            bar.advance(task)
        vocab = vocab_of(counts, options)
        if len(vocab) == len(SPECIALS):
            raise SeqlvmError(f"{spec}: no sentences of {options.min_length}..{options.max_length} tokens found")
        bar.reset(task, description="writing shards", total=len(packs))
        per_pack: dict[int, dict[str, SplitSummary]] = {}
        for index, summaries in work.map(partial(write_pack, source=source, words=vocab.words, folder=staging),
                                         list(enumerate(packs))):
            per_pack[index] = summaries
            bar.advance(task)
        splits = merged_splits([per_pack[i] for i in sorted(per_pack)])
        if splits["train"].sequences == 0:
            raise SeqlvmError(f"{spec}: every sentence fell outside the training split; lower the fractions")
        staging.write_bytes(VOCAB_FILE, vocab.to_json())
        train_tokens = sum(counts.values())
        manifest = write_manifest(
            staging, format=FORMAT, modality="text", source=spec, fingerprint=digest, options=options, splits=splits,
            started=started, vocab_size=len(vocab), packs=len(packs),
            train_token_coverage=round(1 - splits["train"].unknown_steps / max(1, train_tokens), 4))
    return manifest
