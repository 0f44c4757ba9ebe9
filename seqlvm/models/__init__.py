"""Model registry: configs, the CLI and checkpoints refer to models by name."""
from __future__ import annotations

from seqlvm.errors import SeqlvmError
from seqlvm.models.base import ModelOutput, SequenceModel
from seqlvm.models.rnnlm import RNNLM
from seqlvm.models.sentence_vae import SentenceVAE

MODELS: dict[str, type[SequenceModel]] = {cls.name: cls for cls in (SentenceVAE, RNNLM)}


def model_class(name: str) -> type[SequenceModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise SeqlvmError(f"unknown model {name!r} (registered: {', '.join(sorted(MODELS))})") from None


def build_model(name: str, config: dict, vocab_size: int) -> SequenceModel:
    cls = model_class(name)
    return cls(cls.config_class(**config), vocab_size)


__all__ = ["MODELS", "ModelOutput", "SequenceModel", "build_model", "model_class"]
