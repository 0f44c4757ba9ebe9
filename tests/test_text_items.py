"""`seqlvm prepare text` item by item: a large file read in byte ranges gives the sentences of reading it whole, and
preparing in this process or as Ray Data tasks gives the same dataset."""
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.errors import SeqlvmError
from pipelines.manifest import merged_splits, write_manifest
from pipelines.shards import SPLITS, Folder, SplitSummary
from pipelines.text import TextOptions, prepare_text
from pipelines.text_sources import InputFile, TextItem, file_items, item_blocks, play_speeches, shakespeare_files
from pipelines.vocab import Vocab
from pipelines.work import InProcess, OnRay
from tests.conftest import SMALL_CORPUS, write_corpus


def random_text(rng: random.Random) -> str:
    words = ["a", "bb", "ccc", "é", "d.", "E!", "f?"]
    lines = [rng.choice(["", " ", "\t ", "\r"]) if rng.random() < 0.25
             else " ".join(rng.choice(words) for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(1, 40))]
    return rng.choice(["\n", "\r\n"]).join(lines) + rng.choice(["", "\n", "\n\n"])


@pytest.mark.parametrize("layout", ["lines", "paragraphs"])
def test_byte_ranges_own_each_line_and_paragraph_once(tmp_path, layout):
    rng = random.Random(0)
    path = tmp_path / "corpus.txt"
    for _ in range(150):
        path.write_bytes(random_text(rng).encode())
        whole = [" ".join(b.split()) for b in item_blocks(TextItem("file", str(path)), layout, "utf-8", "", "")]
        for range_bytes in (1, 3, 7, 16):
            packs = file_items([InputFile(str(path), "corpus.txt", path.stat().st_size, 0)], "utf-8", range_bytes)
            assert len(packs) == -(-path.stat().st_size // range_bytes)
            ranged = [" ".join(b.split()) for (item,) in packs for b in item_blocks(item, layout, "utf-8", "", "")]
            assert ranged == whole, (range_bytes, path.read_bytes())


def test_a_large_file_is_read_in_ranges_with_the_same_sentences(tmp_path, monkeypatch):
    source = write_corpus(tmp_path / "corpus.txt", SMALL_CORPUS * 20)
    whole = prepare_text(str(source), tmp_path / "whole", TextOptions(valid_fraction=0.2, test_fraction=0.2))
    monkeypatch.setattr("pipelines.text_sources.RANGE_BYTES", 1000)
    ranged = prepare_text(str(source), tmp_path / "ranged", TextOptions(valid_fraction=0.2, test_fraction=0.2))
    assert whole["packs"] == 1 and ranged["packs"] == -(-source.stat().st_size // 1000)
    assert split_rows(tmp_path / "ranged", ranged) == split_rows(tmp_path / "whole", whole)
    assert (tmp_path / "ranged" / "vocab.json").read_bytes() == (tmp_path / "whole" / "vocab.json").read_bytes()


def split_rows(root: Path, manifest: dict) -> dict[str, list]:
    """Each split's rows, in the order its shards list them."""
    return {s: [row for shard in manifest["splits"][s]["shards"] for row in pq.read_table(root / shard).to_pylist()]
            for s in SPLITS}


def test_in_process_and_on_ray_prepare_the_same_dataset(ray_session, tmp_path, monkeypatch):
    plays = tmp_path / "plays.txt"  # the built-in corpus as one file of running prose, read in ranges
    plays.write_text("\n\n".join(speech for play in shakespeare_files()
                                 for speech in play_speeches(play.read_text(encoding="utf-8"))))
    monkeypatch.setattr("pipelines.text_sources.RANGE_BYTES", 400_000)
    options = TextOptions(vocab_size=3000, max_length=30, shard_size=500, layout="prose")
    local = prepare_text(str(plays), tmp_path / "local", options, work=InProcess())
    on_ray = prepare_text(str(plays), tmp_path / "ray", options, work=OnRay())
    assert local["packs"] == -(-plays.stat().st_size // 400_000) > 5
    assert (tmp_path / "ray" / "vocab.json").read_bytes() == (tmp_path / "local" / "vocab.json").read_bytes()
    for key in ("fingerprint", "splits", "train_token_coverage", "vocab_size", "packs"):
        assert on_ray[key] == local[key], key
    assert split_rows(tmp_path / "ray", on_ray) == split_rows(tmp_path / "local", local)


def test_each_data_file_of_a_hugging_face_dataset_is_an_item_read_once(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    sentences = [f"{word} number {i} ." for i, word in enumerate(["alpha", "beta", "gamma", "delta"] * 6)]
    for part in range(3):
        (folder / f"part-{part}.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in sentences[part::3]))
    manifest = prepare_text(f"hf:{folder}", tmp_path / "d", TextOptions(valid_fraction=0, test_fraction=0))
    assert manifest["packs"] == 3
    vocab = Vocab.load(tmp_path / "d" / "vocab.json")
    rows = split_rows(tmp_path / "d", manifest)["train"]
    assert sorted(" ".join(vocab.decode(row["ids"])) for row in rows) == sorted(sentences)


def test_a_bad_file_read_by_a_ray_task_stops_in_one_line_and_writes_nothing(ray_session, tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(corpus / "a.txt", SMALL_CORPUS)
    (corpus / "b.txt").write_bytes(b"fine words\n\xff\xfe broken\n")
    out = tmp_path / "out"
    with pytest.raises(SeqlvmError) as error:
        prepare_text(str(corpus), out, TextOptions(), work=OnRay())
    assert str(error.value) == f"{corpus / 'b.txt'}: not valid utf-8 at byte 11 (try --encoding latin-1)"
    assert not out.exists() and list(tmp_path.iterdir()) == [corpus]


def test_small_files_are_read_in_packs_with_a_shard_each(tmp_path, monkeypatch):
    folder = tmp_path / "documents"
    for i in range(30):
        write_corpus(folder / f"doc-{i:02d}.txt", SMALL_CORPUS[i % 10:i % 10 + 5])
    options = TextOptions(valid_fraction=0, test_fraction=0)
    one_pack = prepare_text(str(folder), tmp_path / "one", options)
    assert one_pack["packs"] == 1 and len(one_pack["splits"]["train"]["shards"]) == 1
    monkeypatch.setattr("pipelines.work.PACK_BYTES", 1000)
    small_packs = prepare_text(str(folder), tmp_path / "many", options)
    assert small_packs["packs"] == len(small_packs["splits"]["train"]["shards"]) > 3
    assert split_rows(tmp_path / "many", small_packs) == split_rows(tmp_path / "one", one_pack)


def test_no_manifest_is_written_for_shards_the_driver_cannot_see(tmp_path):
    """What a local --out on a cluster whose nodes do not share it would give: shards written elsewhere."""
    folder = Folder.local(tmp_path)
    splits = merged_splits([{"train": SplitSummary(sequences=3, steps=9, shards=["train/part-00000-00000.parquet"])}])
    with pytest.raises(SeqlvmError, match="^1 shards the tasks wrote .* are not in the output folder"):
        write_manifest(folder, format="f", modality="text", source="s", fingerprint="x", options={}, splits=splits,
                       started=0.0)
    assert not (tmp_path / "manifest.json").exists()
