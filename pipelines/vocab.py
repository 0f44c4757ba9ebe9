"""Word vocabulary with the four special tokens every text model here relies on, at fixed ids."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.errors import SeqlvmError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
VOCAB_FILE = "vocab.json"


class Vocab:
    def __init__(self, words: list[str]):
        if tuple(words[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.index.get(t, UNK_ID) for t in tokens]

    def decode(self, ids, stop_at_eos: bool = True) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS_ID and stop_at_eos:
                break
            if i in (PAD_ID, BOS_ID):
                continue
            out.append(self.words[i])
        return out

    @property
    def is_characters(self) -> bool:
        """A character vocabulary (every entry one character): its tokens join without spaces."""
        return all(len(w) == 1 for w in self.words[len(SPECIALS):])

    def text(self, ids) -> str:
        """Ids decoded into a string, up to the first </s>."""
        return ("" if self.is_characters else " ").join(self.decode(ids))

    def to_json(self) -> bytes:
        """What vocab.json holds."""
        return json.dumps(self.words, ensure_ascii=False).encode()

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        """From a vocab.json file: a local path or a URI pyarrow can open."""
        from pipelines.shards import resolve  # here, so models that use the special ids do not load pyarrow
        filesystem, file = resolve(path)
        with filesystem.open_input_stream(file) as stream:
            return cls(json.loads(stream.read()))

    @classmethod
    def of_dataset(cls, data_dir: str | Path) -> "Vocab":
        """The vocabulary of the prepared text dataset at `data_dir` (a local path or a URI)."""
        from pipelines.shards import read_dataset_file
        try:
            return cls(json.loads(read_dataset_file(data_dir, VOCAB_FILE)))
        except FileNotFoundError:
            raise SeqlvmError(f"{data_dir}: no {VOCAB_FILE}; not a prepared text dataset") from None
        except (OSError, ValueError) as exc:
            raise SeqlvmError(f"{data_dir}: unreadable {VOCAB_FILE} ({str(exc).strip().splitlines()[0]})") from None
