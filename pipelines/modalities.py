"""The kinds of data, in one place: for each modality, whether it is frames, the output distribution frame models
use for it by default and what renders its frames; for each `seqlvm prepare` command, the reader that prepares it.
(Which models read a modality is declared by each model, as its `modalities`.)"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipelines.errors import SeqlvmError


@dataclass(frozen=True)
class Modality:
    name: str
    frames: bool
    output: str | None = None  # the output head frame models use unless the config says otherwise
    renderer: str | None = None  # "module:function" writing a frame sequence as files


@dataclass(frozen=True)
class Preparer:
    command: str  # `seqlvm prepare COMMAND`
    modality: str
    reader: str  # "module:OptionsClass:function"
    sources: str  # what --source takes

    def load(self):
        """(the reader's options dataclass, its prepare function)."""
        module, options, function = self.reader.split(":")
        module = importlib.import_module(module)
        return getattr(module, options), getattr(module, function)


MODALITIES = {m.name: m for m in (
    Modality("text", frames=False),
    Modality("audio", frames=True, output="gauss", renderer="pipelines.audio:render_audio"),
    Modality("strokes", frames=True, output="strokes", renderer="pipelines.strokes:render_strokes"),
    Modality("midi", frames=True, output="bernoulli", renderer="pipelines.midi:render_midi"),
)}
FRAME_MODALITIES = tuple(name for name, modality in MODALITIES.items() if modality.frames)

PREPARERS = {p.command: p for p in (
    Preparer("text", "text", "pipelines.text:TextOptions:prepare_text",
             "sentences: .txt/.txt.gz files or folders, hf:owner/name (streamed), builtin:shakespeare"),
    Preparer("audio", "audio", "pipelines.audio:AudioOptions:prepare_audio",
             "speech: .wav/.flac/.ogg files or folders, builtin:speech-es|speech-ro (recorded), builtin:flite "
             "(synthetic)"),
    Preparer("strokes", "strokes", "pipelines.strokes:StrokeOptions:prepare_strokes",
             "handwriting: IAM-OnDB lineStrokes XML files or folders, builtin:kanjivg, builtin:lasa"),
    Preparer("words", "text", "pipelines.words:WordOptions:prepare_words",
             "English words by frequency, one character a token (the word-generation task of the dssm model): "
             "wordfreq:en"),
    Preparer("midi", "midi", "pipelines.midi:MidiOptions:prepare_midi",
             "piano rolls: .mid files or folders, a Boulanger-Lewandowski .pickle, an .npz of rolls, builtin:bach, "
             "builtin:folk"),
)}


def renderer(modality: str):
    """The function that writes a sequence of `modality` frames as files (sound, ink, notes)."""
    spec = MODALITIES.get(modality)
    if spec is None or spec.renderer is None:
        renderable = ", ".join(name for name, m in MODALITIES.items() if m.renderer)
        raise SeqlvmError(f"no renderer for {modality!r} data (renderable: {renderable})")
    module, function = spec.renderer.split(":")
    return getattr(importlib.import_module(module), function)
