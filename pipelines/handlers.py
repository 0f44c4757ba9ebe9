"""The code that handles each kind of data, named by "module:name" strings and imported only when used: for each
`seqlvm prepare` command, the reader that prepares it; for each frame modality, what renders its frames as files.
(The readers import `pipelines.modalities`; naming them here by string keeps that one-way.)"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipelines.errors import SeqlvmError


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

# "module:function" writing a sequence of a modality's frames as files (sound, ink, notes).
RENDERERS = {
    "audio": "pipelines.audio:render_audio",
    "strokes": "pipelines.strokes:render_strokes",
    "midi": "pipelines.midi:render_midi",
}


def renderer(modality: str):
    """The function that writes a sequence of `modality` frames as files."""
    if modality not in RENDERERS:
        raise SeqlvmError(f"no renderer for {modality!r} data (renderable: {', '.join(RENDERERS)})")
    module, function = RENDERERS[modality].split(":")
    return getattr(importlib.import_module(module), function)
