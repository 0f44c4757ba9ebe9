"""`prepare_words`: the word-generation task of Schmidt & Hofmann (2018, sections 4.1 and 5.1) as a
character-level text dataset, from the English word frequencies of the `wordfreq` package (the paper counts
BooksCorpus; wordfreq's 'large' list is a free stand-in).

Word types: letters a-z only, length `min_length..max_length` (the paper: 2..12), the `vocab_size` most frequent
(the paper: 143K types), with the unigram distribution P(w) of their frequencies renormalised over the kept types.

Splits (Section 5.1). Rows are the tokens of a notional corpus of `corpus_tokens` words drawn i.i.d. from P, each
token assigned to a split:
- "word", the standard split: a token is test with probability test_fraction, whatever its type. A random
  token-level split leaves each split with the corpus' own distribution, so p_train = p_test = P (same support);
  the splits differ only in their independent draws.
- "vocab", the alternative split: test_fraction of the word types, chosen by a hash of the word (regardless of
  frequency), occur only in test; the tokens of the other types are split as above. So
      p_train(w) ∝ P(w) [w shared],     p_test(w) ∝ P(w) (test_fraction [w shared] + [w test-only]).
The validation split is a valid_fraction of the non-test tokens (p_valid = p_train).

Each row is one word's characters (the batch collation adds <s> and </s>), so a model's mean NLL per row is a Monte
Carlo estimate of the cross-entropy H[P_split, P-hat]. `words.parquet` keeps the exact distributions (word,
p_train, p_test) for the exact cross-entropy of `seqlvm.word_metrics`.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import re
import string
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import SeqlvmError
from pipelines.manifest import write_manifest
from pipelines.shards import (SPLITS, Folder, ShardWriter, SplitSummary, atomic_output, is_up_to_date,
                              read_dataset_file, read_manifest, split_of)
from pipelines.text import TEXT_SCHEMA
from pipelines.vocab import SPECIALS, VOCAB_FILE, Vocab
from pipelines.work import InProcess

FORMAT = "seqlvm-words/1"
SOURCE = "wordfreq:en"
WORDS_FILE = "words.parquet"
SPLIT_KINDS = ("word", "vocab")
WORDS_SCHEMA = pa.schema([("word", pa.string()), ("p_train", pa.float64()), ("p_test", pa.float64())])
_LETTERS = re.compile(r"[a-z]+")


@dataclass
class WordOptions:
    vocab_size: int = field(default=20000, metadata={
        "help": "word types kept: the most frequent after filtering (the paper: 143K)"})
    min_length: int = field(default=2, metadata={"help": "shortest word kept, in letters"})
    max_length: int = field(default=12, metadata={"help": "longest word kept, in letters"})
    split: str = field(default="word", metadata={
        "help": "word: tokens split at random (same types in train and test); vocab: a share of the types "
                "occurs only in test"})
    test_fraction: float = field(default=0.1, metadata={
        "help": "share of the tokens (word split) or of the types (vocab split) that is test"})
    valid_fraction: float = field(default=0.05, metadata={"help": "share of the non-test tokens that is validation"})
    corpus_tokens: int = field(default=250000, metadata={
        "help": "word tokens drawn from the frequencies and split into the train/valid/test rows"})
    seed: int = field(default=0, metadata={"help": "seed of the token draws and of the type hash"})
    shard_size: int = field(default=50000, metadata={"help": "rows (words) per Parquet shard"})

    def validate(self) -> None:
        if self.vocab_size < 2:
            raise SeqlvmError(f"--vocab-size must be at least 2 word types, got {self.vocab_size}")
        if not 1 <= self.min_length <= self.max_length:
            raise SeqlvmError("--min-length must be at least 1 and at most --max-length")
        if self.split not in SPLIT_KINDS:
            raise SeqlvmError(f"--split must be word or vocab, not {self.split!r}")
        if not 0 < self.test_fraction < 1 or not 0 <= self.valid_fraction < 1:
            raise SeqlvmError("--test-fraction must be in (0, 1) and --valid-fraction in [0, 1)")
        if self.corpus_tokens < 1 or self.shard_size < 1:
            raise SeqlvmError("--corpus-tokens and --shard-size must be at least 1")


def wordlist_path() -> Path:
    spec = importlib.util.find_spec("wordfreq")  # not imported: wordfreq's own import pulls in ftfy
    if spec is None or spec.origin is None:
        raise SeqlvmError("the words task needs the `wordfreq` package (pip install wordfreq)")
    path = Path(spec.origin).parent / "data" / "large_en.msgpack.gz"
    if not path.is_file():
        raise SeqlvmError(f"{path}: missing from the installed wordfreq package (reinstall it)")
    return path


def read_frequencies(path: Path) -> dict[str, float]:
    """word -> frequency from a wordfreq cBpack file: a gzipped msgpack list whose element 0 is the header and whose
    element i >= 1 lists the words of frequency 10 ** (-(i - 1) / 100), i.e. -(i - 1) centibels (wordfreq 3's
    read_cBpack drops the header and get_frequency_dict maps index j of the rest to cB_to_freq(-j))."""
    try:
        import msgpack
    except ImportError:
        raise SeqlvmError("the words task needs the `msgpack` package (a dependency of wordfreq)") from None
    try:
        with gzip.open(path, "rb") as stream:
            header, *bands = msgpack.load(stream, raw=False)
    except (OSError, ValueError, msgpack.UnpackException) as exc:
        raise SeqlvmError(f"{path}: unreadable wordfreq list ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != "cB" or header.get("version") != 1:
        raise SeqlvmError(f"{path}: not a wordfreq cBpack file (header {header!r})")
    return {word: 10 ** (-centibels / 100) for centibels, band in enumerate(bands) for word in band}


def word_distribution(frequencies: dict[str, float], options: WordOptions) -> tuple[list[str], np.ndarray]:
    """The `vocab_size` most frequent letter-only words of the allowed lengths (lowercased; case variants merged)
    and their renormalised probabilities, most frequent first (ties alphabetically)."""
    merged: dict[str, float] = {}
    for word, frequency in frequencies.items():
        word = word.lower()
        if _LETTERS.fullmatch(word) and options.min_length <= len(word) <= options.max_length:
            merged[word] = merged.get(word, 0.0) + frequency
    kept = sorted(merged, key=lambda w: (-merged[w], w))[:options.vocab_size]
    if not kept:
        raise SeqlvmError(f"{SOURCE}: no words of {options.min_length}..{options.max_length} letters")
    probs = np.array([merged[w] for w in kept])
    return kept, probs / probs.sum()


def held_out_types(words: list[str], options: WordOptions) -> np.ndarray:
    """(V,) bool: the types that occur only in test (the vocab split; none in the word split)."""
    if options.split == "word":
        return np.zeros(len(words), dtype=bool)
    return np.array([split_of(w, 0.0, options.test_fraction, options.seed) == "test" for w in words])


def split_distributions(probs: np.ndarray, test_only: np.ndarray,
                        test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(p_train, p_test) over the types, from the token-level split of the shared types (see the module docstring)."""
    train = np.where(test_only, 0.0, probs)
    test = probs * np.where(test_only, 1.0, test_fraction)
    return train / train.sum(), test / test.sum()


def draw_rows(probs: np.ndarray, test_only: np.ndarray, options: WordOptions) -> dict[str, np.ndarray]:
    """The type index of each row of each split: corpus tokens drawn from P, each assigned to test when its type is
    test-only or with probability test_fraction, else to valid with probability valid_fraction."""
    rng = np.random.default_rng(options.seed)
    tokens = rng.choice(len(probs), size=options.corpus_tokens, p=probs)
    u = rng.random(options.corpus_tokens)
    is_test = test_only[tokens] | (u < options.test_fraction)
    # Given not test, u is uniform on [test_fraction, 1): its first valid_fraction share is valid.
    is_valid = ~is_test & (u < options.test_fraction + options.valid_fraction * (1 - options.test_fraction))
    return {"train": tokens[~is_test & ~is_valid], "valid": tokens[is_valid], "test": tokens[is_test]}


def char_vocab() -> Vocab:
    return Vocab(list(SPECIALS) + list(string.ascii_lowercase))


def entropy(probs: np.ndarray) -> float:
    """H[p] in nats."""
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())


def fingerprint(options: WordOptions, source: Path) -> str:
    digest = hashlib.sha256(FORMAT.encode())
    digest.update(repr(sorted(asdict(options).items())).encode())
    digest.update(hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()


def write_split(folder: Folder, split: str, rows: np.ndarray, type_ids: list[list[int]],
                shard_size: int) -> SplitSummary:
    writer = ShardWriter(folder, split, TEXT_SCHEMA, shard_size)
    for index in rows:
        writer.add(ids=type_ids[index], length=len(type_ids[index]))
    writer.flush()
    return writer.summary


@dataclass(frozen=True)
class WordsTask:
    """The one task of the words task's preparation: where to write, from which word list, with which options."""
    folder: Folder
    source: Path
    options: WordOptions


@dataclass
class WordsWritten:
    """What the task wrote, for the manifest."""
    splits: dict[str, SplitSummary]
    vocab_size: int
    word_types: int
    test_only_types: int
    entropy_nats: dict[str, float]


def write_words(task: WordsTask) -> WordsWritten:
    """Draw the rows and write the splits, the character vocabulary and the word table into `task.folder`."""
    options, folder = task.options, task.folder
    words, probs = word_distribution(read_frequencies(task.source), options)
    test_only = held_out_types(words, options)
    if test_only.all():
        raise SeqlvmError(f"--split vocab put all {len(words)} word types in test; raise --vocab-size")
    p_train, p_test = split_distributions(probs, test_only, options.test_fraction)
    rows = draw_rows(probs, test_only, options)
    if not all(len(r) for r in rows.values()):
        raise SeqlvmError(f"--corpus-tokens {options.corpus_tokens} left a split without rows; raise it")
    vocab = char_vocab()
    type_ids = [vocab.encode(list(w)) for w in words]
    splits = {s: write_split(folder, s, rows[s], type_ids, options.shard_size) for s in SPLITS}
    folder.write_bytes(VOCAB_FILE, vocab.to_json())
    folder.write_table(WORDS_FILE, pa.table({"word": words, "p_train": p_train, "p_test": p_test},
                                            schema=WORDS_SCHEMA))
    return WordsWritten(splits, len(vocab), len(words), int(test_only.sum()),
                        {"train": entropy(p_train), "test": entropy(p_test)})


def prepare_words(source: str, out: str | Path, options: WordOptions, overwrite: bool = False, console=None,
                  work=InProcess()) -> dict:
    """Prepare the words task from `source` (wordfreq:en) into `out`, as one `work` task. Returns the manifest; a
    no-op when `out` already holds it."""
    if source != SOURCE:
        raise SeqlvmError(f"{source}: unknown word-frequency source (available: {SOURCE})")
    options.validate()
    wordlist = wordlist_path()
    digest = fingerprint(options, wordlist)
    if is_up_to_date(out, digest):
        if console:
            console.print(f"{out}: already prepared from this input with these options; nothing to do")
        return read_manifest(out)

    started = time.time()
    with atomic_output(out, overwrite) as tmp:
        [(_, written)] = work.map(write_words, [WordsTask(tmp, wordlist, options)])
        return write_manifest(tmp, format=FORMAT, modality="text", source=SOURCE, fingerprint=digest,
                              options=options, splits=written.splits, started=started, unit="char", task="words",
                              vocab_size=written.vocab_size, word_types=written.word_types,
                              test_only_types=written.test_only_types, entropy_nats=written.entropy_nats)


def read_words(data_dir: str | Path) -> pa.Table:
    """The word table (word, p_train, p_test) of a prepared words dataset (a local path or a URI)."""
    try:
        return pq.read_table(io.BytesIO(read_dataset_file(data_dir, WORDS_FILE)))
    except FileNotFoundError:
        raise SeqlvmError(f"{data_dir}: no {WORDS_FILE}; not a dataset of the words task (prepare_words)") from None
    except (OSError, pa.ArrowException) as exc:
        raise SeqlvmError(f"{data_dir}: unreadable {WORDS_FILE} ({str(exc).strip().splitlines()[0]})") from None
