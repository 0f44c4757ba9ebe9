"""The one description of the data a model reads: its modality, its vocabulary and tokenisation options (text) or
its frame layout and standardisation (frames), and where it came from. Built from a `PreparedDataset`, stored in
every checkpoint (and so in every registered version) as plain data, and the only thing that turns a user's
sentences or frames into a model's tensors and back: sampling, evaluation, the MLflow model, the service and the
scorer all encode inputs exactly as their corpus was prepared."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from pipelines.errors import SeqlvmError
from pipelines.frames import denormalise
from pipelines.stream import Layout, layout_for
from pipelines.text import TextOptions, tokenize
from pipelines.vocab import UNK_ID, Vocab

# The preparation options that decide how a sentence becomes tokens.
TOKENISATION_FIELDS = ("lowercase", "tokenizer", "unit")


@dataclass(frozen=True)
class DataDescription:
    modality: str  # text | audio | strokes | midi
    fingerprint: str = ""
    location: str = ""  # where the corpus was prepared (what `seqlvm evaluate` reads without --data)
    source: str = ""
    task: str | None = None
    words: tuple[str, ...] = ()  # text: the vocabulary, specials first
    tokenisation: dict = field(default_factory=dict)  # text: TOKENISATION_FIELDS as prepared
    frame_dim: int | None = None
    output: str | None = None  # frames: the output distribution frame models use by default
    normalisation: dict | None = None  # frames: the standardisation to undo ({dims, mean, std})
    render: dict = field(default_factory=dict)
    mean_steps: int = 0  # frames: the training split's mean length (a prior sample's default)
    max_steps: int = 0  # the training split's longest sequence (0: not recorded)

    @classmethod
    def of_dataset(cls, dataset) -> "DataDescription":
        """From a `PreparedDataset`."""
        train = dataset.splits["train"]
        common = dict(modality=dataset.modality, fingerprint=dataset.fingerprint, location=dataset.location,
                      source=dataset.source, task=dataset.task, max_steps=train.max_steps)
        if dataset.is_text:
            options = {**dataclasses.asdict(TextOptions()), **dataset.options}
            return cls(**common, words=tuple(dataset.vocab.words),
                       tokenisation={name: options[name] for name in TOKENISATION_FIELDS})
        return cls(**common, frame_dim=dataset.frame_dim, output=dataset.output,
                   normalisation=dataset.normalisation, render=dataset.render,
                   mean_steps=round(train.steps / max(1, train.sequences)))

    @classmethod
    def of_checkpoint(cls, payload: dict) -> "DataDescription":
        """From a checkpoint's payload: its `data` entry, or in checkpoints written before it existed, the
        `vocab`, `data_info` and `data_dir` entries (text tokenised with the defaults of the time)."""
        if payload.get("data"):
            return cls.from_dict(payload["data"])
        location = payload.get("data_dir") or ""
        if payload.get("vocab"):
            vocab = Vocab(payload["vocab"])
            options = TextOptions(unit="char" if vocab.is_characters else "word")
            return cls("text", location=location, words=tuple(vocab.words),
                       tokenisation={name: getattr(options, name) for name in TOKENISATION_FIELDS})
        info = payload.get("data_info") or {}
        if "frame_dim" not in info:
            raise SeqlvmError(f"{payload.get('path', 'the checkpoint')}: records neither a vocabulary nor a frame "
                              "layout; not a seqlvm checkpoint")
        return cls(info["modality"], location=location, frame_dim=int(info["frame_dim"]), output=info.get("output"),
                   normalisation=info.get("normalisation"), render=info.get("render") or {},
                   mean_steps=int(info.get("mean_steps") or 0))

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "words": list(self.words)}

    @classmethod
    def from_dict(cls, data: dict) -> "DataDescription":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "words": tuple(data.get("words") or ())})

    @property
    def is_text(self) -> bool:
        return self.modality == "text"

    @cached_property
    def vocab(self) -> Vocab:
        if not self.is_text:
            raise SeqlvmError(f"{self.modality} data has frames, not a vocabulary")
        return Vocab(list(self.words))

    @property
    def text_options(self) -> TextOptions:
        return TextOptions(**self.tokenisation)

    @property
    def input_size(self) -> int:
        """What a model's input layer is built from: the vocabulary's size, or the frame size."""
        return len(self.words) if self.is_text else int(self.frame_dim)

    @property
    def layout(self) -> Layout:
        return layout_for(self.frame_dim)

    def data_info(self) -> dict:
        """The frame layout as the renderers and `denormalise` read it."""
        return {"modality": self.modality, "frame_dim": self.frame_dim, "output": self.output,
                "normalisation": self.normalisation, "render": self.render, "mean_steps": self.mean_steps}

    # Text
    def tokens(self, sentence: str) -> list[str]:
        """A sentence's tokens, as the corpus was tokenised."""
        return tokenize(sentence, self.text_options)

    def unknown_words(self, sentence: str) -> list[str]:
        """The tokens of a sentence outside the vocabulary (each once, in order)."""
        return list(dict.fromkeys(t for t in self.tokens(sentence) if t not in self.vocab.index))

    def encode_sentences(self, sentences: list[str]) -> list[np.ndarray]:
        """Token ids of each sentence, tokenised as at preparation (unknown tokens as <unk>); an empty one is
        refused."""
        encoded = []
        for sentence in sentences:
            ids = self.vocab.encode(self.tokens(sentence))
            if not ids:
                raise SeqlvmError(f"cannot encode an empty sentence: {sentence!r}")
            encoded.append(np.asarray(ids, dtype=np.int64))
        return encoded

    def text(self, ids) -> str:
        return self.vocab.text(ids)

    def unknown_share(self, encoded: list[np.ndarray]) -> float:
        total = sum(len(ids) for ids in encoded)
        return sum(int((ids == UNK_ID).sum()) for ids in encoded) / max(1, total)

    # Frames
    def standardised(self, frames) -> np.ndarray:
        """Frames in the data's units (samples, pen offsets, notes) as the model reads them: (T, frame_dim)."""
        array = np.asarray(frames, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.frame_dim:
            raise SeqlvmError(f"frames of shape {tuple(array.shape)}: this model reads (steps, {self.frame_dim})")
        if not np.isfinite(array).all():
            raise SeqlvmError("frames hold NaN or infinite values")
        norm = self.normalisation
        if norm:
            array = array.copy()
            array[..., norm["dims"]] = (array[..., norm["dims"]] - np.asarray(norm["mean"])) / np.asarray(norm["std"])
        return array

    def in_data_units(self, frames) -> np.ndarray:
        """The model's (standardised) frames back in the data's units."""
        return denormalise(frames, self.data_info())
