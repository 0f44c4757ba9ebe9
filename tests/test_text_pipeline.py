import gzip
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from pipelines.stream import bucketed, collate, local_batches
from pipelines.text import TextOptions, prepare_text, split_sentences, tokenize
from pipelines.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, Vocab
from tests.conftest import SMALL_CORPUS, write_corpus


def test_tokenize_and_lowercase():
    assert tokenize("Now, fair Hippolyta! I'll go.", TextOptions()) == \
        ["now", ",", "fair", "hippolyta", "!", "i'll", "go", "."]
    assert tokenize("Keep Case here", TextOptions(lowercase=False, tokenizer="whitespace")) == ["Keep", "Case", "here"]


def test_split_sentences_in_running_prose():
    text = "Go, Philostrate. Stir up the youth!\nIs it so? Yes."
    assert split_sentences(text) == ["Go, Philostrate.", "Stir up the youth!", "Is it so?", "Yes."]


def test_prepare_local_file_writes_shards_vocab_and_manifest(tmp_path):
    src = write_corpus(tmp_path / "corpus.txt", SMALL_CORPUS)
    out = tmp_path / "data"
    manifest = prepare_text(str(src), out, TextOptions(valid_fraction=0.2, test_fraction=0.2, shard_size=7))
    vocab = Vocab.load(out / "vocab.json")
    assert tuple(vocab.words[:4]) == SPECIALS
    counted = sum(manifest["splits"][s]["sequences"] for s in ("train", "valid", "test"))
    assert counted == len(SMALL_CORPUS)
    assert len(manifest["splits"]["train"]["shards"]) == -(-manifest["splits"]["train"]["sequences"] // 7)
    table = pq.read_table(out / manifest["splits"]["train"]["shards"][0])
    assert table.column_names == ["ids", "length"]
    ids = table.column("ids").to_pylist()
    assert all(len(row) == n for row, n in zip(ids, table.column("length").to_pylist()))
    # Duplicated sentences never straddle splits: the split is a function of the sentence.
    dataset = PreparedDataset.open(out)
    decoded = {s: {" ".join(vocab.decode(x)) for x in dataset.read(s)} for s in ("train", "valid", "test")}
    assert not (decoded["train"] & decoded["valid"]) and not (decoded["train"] & decoded["test"])
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == manifest["fingerprint"]


def test_prepare_is_deterministic_and_a_rerun_is_a_no_op(tmp_path):
    src = write_corpus(tmp_path / "corpus.txt", SMALL_CORPUS)
    first = prepare_text(str(src), tmp_path / "a", TextOptions())
    second = prepare_text(str(src), tmp_path / "b", TextOptions())
    assert first["splits"] == second["splits"]
    shard = tmp_path / "a" / first["splits"]["train"]["shards"][0]
    before = shard.stat().st_mtime_ns
    prepare_text(str(src), tmp_path / "a", TextOptions())
    assert shard.stat().st_mtime_ns == before


def test_vocabulary_is_capped_to_most_frequent_words(tmp_path):
    src = write_corpus(tmp_path / "c.txt", ["a a a a b b b c c d ."] * 3)
    prepare_text(str(src), tmp_path / "d", TextOptions(vocab_size=6, valid_fraction=0, test_fraction=0))
    assert Vocab.load(tmp_path / "d" / "vocab.json").words == list(SPECIALS) + ["a", "b"]


def test_gzip_files_and_folders_are_read(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "one.txt.gz").write_bytes(gzip.compress("\n".join(SMALL_CORPUS[:10]).encode()))
    write_corpus(folder / "two.txt", SMALL_CORPUS[10:20])
    manifest = prepare_text(str(folder), tmp_path / "d", TextOptions(valid_fraction=0, test_fraction=0))
    assert manifest["splits"]["train"]["sequences"] == 20


def test_max_length_filters_long_sentences(tmp_path):
    src = write_corpus(tmp_path / "c.txt", ["one two three", "one two three four five six"])
    manifest = prepare_text(str(src), tmp_path / "d", TextOptions(max_length=4, valid_fraction=0, test_fraction=0))
    assert manifest["splits"]["train"]["sequences"] == 1


def test_hf_source_reads_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in SMALL_CORPUS[:12]))
    manifest = prepare_text(f"hf:{folder}", tmp_path / "d", TextOptions(valid_fraction=0, test_fraction=0))
    assert manifest["splits"]["train"]["sequences"] == 12
    with pytest.raises(SeqlvmError, match="no column 'sentence'"):
        prepare_text(f"hf:{folder}", tmp_path / "e", TextOptions(hf_text_column="sentence"))


def test_builtin_shakespeare_is_real_text(shakespeare):
    manifest = json.loads((shakespeare / "manifest.json").read_text())
    assert manifest["splits"]["train"]["sequences"] > 30000
    vocab = Vocab.load(shakespeare / "vocab.json")
    assert {"lord", "king", "thou"} <= set(vocab.words)


@pytest.mark.parametrize("problem, make, message", [
    ("empty corpus", lambda p: write_corpus(p / "e.txt", [""]), "no sentences"),
    ("missing file", lambda p: p / "missing.txt", "no such file"),
    ("corrupt gzip", lambda p: (p / "bad.txt.gz").write_bytes(b"\x1f\x8bnot gzip") and p / "bad.txt.gz",
     "gzip"),
    ("bad encoding", lambda p: (p / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
     and p / "latin.txt", "not valid utf-8"),
])
def test_bad_input_is_one_error_and_leaves_existing_output_untouched(tmp_path, problem, make, message):
    good = write_corpus(tmp_path / "good.txt", SMALL_CORPUS)
    out = tmp_path / "data"
    prepare_text(str(good), out, TextOptions())
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(SeqlvmError, match=message):
        prepare_text(str(make(tmp_path)), out, TextOptions(), overwrite=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]


def test_a_different_dataset_is_not_overwritten_without_asking(tmp_path):
    out = tmp_path / "data"
    prepare_text(str(write_corpus(tmp_path / "a.txt", SMALL_CORPUS)), out, TextOptions())
    other = write_corpus(tmp_path / "b.txt", SMALL_CORPUS[:20])
    with pytest.raises(SeqlvmError, match="--overwrite"):
        prepare_text(str(other), out, TextOptions())
    manifest = prepare_text(str(other), out, TextOptions(valid_fraction=0, test_fraction=0), overwrite=True)
    assert manifest["splits"]["train"]["sequences"] == 20


def test_vocabulary_too_small_is_rejected(tmp_path):
    with pytest.raises(SeqlvmError, match="too small"):
        prepare_text(str(write_corpus(tmp_path / "a.txt", SMALL_CORPUS)), tmp_path / "d", TextOptions(vocab_size=3))


def test_cli_bad_input_prints_one_line_and_exits_non_zero(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seqlvm.cli", "prepare", "text", "--source",
                             str(tmp_path / "nope.txt"), "--out", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nope.txt: no such file" in lines[0]
    assert not (tmp_path / "d").exists()


def test_collate_pads_and_shifts():
    batch = collate([np.array([5, 6]), np.array([7])])
    assert batch["inputs"].tolist() == [[BOS_ID, 5, 6], [BOS_ID, 7, PAD_ID]]
    assert batch["targets"].tolist() == [[5, 6, EOS_ID], [7, EOS_ID, PAD_ID]]
    assert batch["lengths"].tolist() == [3, 2]


def test_bucketing_keeps_every_sequence_and_reduces_padding():
    rng = np.random.default_rng(0)
    seqs = [np.arange(4, 4 + n) for n in rng.integers(1, 40, size=500)]
    batches = list(bucketed(seqs, 16, rng))
    assert sum(b["inputs"].shape[0] for b in batches) == 500
    padded = sum(b["inputs"].numel() for b in batches)
    unbucketed = sum(b["inputs"].numel() for b in local_batches(seqs, 16))
    assert padded < 0.7 * unbucketed


def test_local_batches_visit_each_sequence_once_per_epoch():
    seqs = [np.array([4 + i]) for i in range(100)]
    seen = sorted(int(t) for b in local_batches(seqs, 8, bucket_factor=4, seed=3) for t in b["targets"][:, 0])
    assert seen == list(range(4, 104))


def test_characters_in_fixed_length_fragments_cover_the_running_text(tmp_path):
    lines = ["The cat sat.", "A dog   ran far away!", "Birds sing."]
    src = write_corpus(tmp_path / "c.txt", lines)
    out = tmp_path / "chars"
    options = TextOptions(unit="char", fragment_length=7, valid_fraction=0, test_fraction=0)
    manifest = prepare_text(str(src), out, options)
    vocab = Vocab.load(out / "vocab.json")
    assert vocab.is_characters and " " in vocab.words and "T" not in vocab.words  # lowercased characters
    assert not PreparedDataset.open(out).has_words
    fragments = [vocab.text(ids) for ids in PreparedDataset.open(out).read("train")]
    assert all(len(f) == 7 for f in fragments)
    running = " ".join(" ".join(line.lower().split()) for line in lines)
    assert manifest["splits"]["train"]["sequences"] == len(running) // 7
    assert sorted(fragments) == sorted(running[i:i + 7] for i in range(0, len(running) - 6, 7))


def test_paragraph_layout_keeps_each_paragraph_one_sequence(tmp_path):
    src = write_corpus(tmp_path / "p.txt", ["First one.", "Still the first.", "", "Second paragraph here."])
    out = tmp_path / "docs"
    prepare_text(str(src), out, TextOptions(layout="paragraphs", valid_fraction=0, test_fraction=0))
    vocab = Vocab.load(out / "vocab.json")
    assert not vocab.is_characters and PreparedDataset.open(out).has_words
    assert sorted(vocab.text(ids) for ids in PreparedDataset.open(out).read("train")) == [
        "first one . still the first .", "second paragraph here ."]


@pytest.mark.parametrize("option", [{"unit": "byte"}, {"fragment_length": -1}, {"layout": "pages"}])
def test_bad_unit_fragment_or_layout_is_a_one_line_error(option):
    with pytest.raises(SeqlvmError) as error:
        TextOptions(**option).validate()
    assert "\n" not in str(error.value)
