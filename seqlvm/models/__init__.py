"""Model registry: configs, the CLI and checkpoints refer to models by name."""
from __future__ import annotations

from seqlvm.errors import SeqlvmError
from seqlvm.models.base import FRAME_MODALITIES, ModelOutput, SequenceModel
from seqlvm.models.dssm import DSSM
from seqlvm.models.frame_rnn import FrameRNN
from seqlvm.models.hybrid_vae import HybridVAE
from seqlvm.models.nasmc import NASMC
from seqlvm.models.nvdm import NVDM
from seqlvm.models.rnnlm import RNNLM
from seqlvm.models.sentence_vae import SentenceVAE
from seqlvm.models.srnn import SRNN
from seqlvm.models.vrnn import VRNN

MODELS: dict[str, type[SequenceModel]] = {cls.name: cls for cls in (
    SentenceVAE, RNNLM, VRNN, SRNN, FrameRNN, DSSM, HybridVAE, NASMC, NVDM)}


def model_class(name: str) -> type[SequenceModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise SeqlvmError(f"unknown model {name!r} (registered: {', '.join(sorted(MODELS))})") from None


def check_modality(name: str, modality: str | None, source: str) -> None:
    """A one-line error when a model cannot read this kind of data (text models need tokens, frame models frames)."""
    cls = model_class(name)
    if modality not in cls.modalities:
        fitting = sorted(n for n, c in MODELS.items() if modality in c.modalities)
        raise SeqlvmError(f"{source}: model {name!r} does not read {modality!r} data"
                          + (f" (models that do: {', '.join(fitting)})" if fitting else ""))


def build_model(name: str, config: dict, vocab_size: int) -> SequenceModel:
    cls = model_class(name)
    return cls(cls.config_class(**config), vocab_size)


__all__ = ["FRAME_MODALITIES", "MODELS", "ModelOutput", "SequenceModel", "build_model", "check_modality", "model_class"]
