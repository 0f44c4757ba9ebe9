"""Model registry: configs, the CLI and checkpoints refer to models by name."""
from __future__ import annotations

from pipelines.errors import SeqlvmError
from seqlvm.models.base import FRAME_MODALITIES, FrameModel, ModelOutput, SequenceModel, TextModel
from seqlvm.models.dssm import DSSM
from seqlvm.models.hybrid_vae import HybridVAE
from seqlvm.models.nasmc import NASMC
from seqlvm.models.nvdm import NVDM
from seqlvm.models.rnn import FrameRNN
from seqlvm.models.rnnlm import RNNLM
from seqlvm.models.sentence_vae import SentenceVAE
from seqlvm.models.srnn import SRNN
from seqlvm.models.vrnn import VRNN

MODELS: dict[str, type[SequenceModel]] = {cls.name: cls for cls in (
    SentenceVAE, RNNLM, VRNN, SRNN, FrameRNN, DSSM, HybridVAE, NASMC, NVDM)}


def model_class(name: str) -> type[SequenceModel]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):  # TypeError: a name that is not text, from a config file
        raise SeqlvmError(f"unknown model {name!r} (registered: {', '.join(sorted(MODELS))})") from None


def check_modality(name: str, modality: str | None, source: str) -> None:
    """A one-line error when a model cannot read this kind of data (text models need tokens, frame models frames)."""
    cls = model_class(name)
    if modality not in cls.modalities:
        fitting = sorted(n for n, c in MODELS.items() if modality in c.modalities)
        raise SeqlvmError(f"{source}: model {name!r} does not read {modality!r} data"
                          + (f" (models that do: {', '.join(fitting)})" if fitting else ""))


def build_model(name: str, config: dict, size: int) -> SequenceModel:
    """Model `name` from its config fields and input size: the vocabulary size of a text model, the frame
    dimension of a frame model."""
    cls = model_class(name)
    return cls(cls.config_class(**config), size)


def build_model_from_args(args: dict) -> SequenceModel:
    """The model described by `constructor_args()` output, also as written before frame models had their own
    size argument (a frame model's frame dimension stored as "vocab_size")."""
    cls = model_class(args["name"])
    size = args.get(cls.size_arg, args.get("vocab_size"))
    if size is None:
        raise SeqlvmError(f"model {args['name']!r}: the checkpoint holds no {cls.size_arg}")
    return build_model(args["name"], args["config"], size)


__all__ = ["FRAME_MODALITIES", "MODELS", "FrameModel", "ModelOutput", "SequenceModel", "TextModel", "build_model",
           "build_model_from_args", "check_modality", "model_class"]
