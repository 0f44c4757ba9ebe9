"""The requests and answers of the API. A request's types and fields are checked here (a wrong or unknown field
is refused before the model is touched); its values (counts, lengths, words, frame sizes) are checked by
`ModelOperations`, the same way for the service, the MLflow model and the scorer."""
from __future__ import annotations

from typing import ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from seqlvm.operations import RequestError

Frames = list[list[float]]  # one sequence: frames of the data's frame size, in the data's units
Input = Union[str, Frames]  # a sentence, or a sequence of frames
Unknown = Literal["refuse", "map"]
UNKNOWN_HELP = "text: refuse a sentence with words outside the vocabulary, or map them to <unk>"


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def refuse_fields(self, names: tuple[str, ...], why: str) -> None:
        given = [name for name in names if name in self.model_fields_set]
        if given:
            raise RequestError(f"{', '.join(given)}: {why}")


class InputsRequest(Request):
    sentences: Optional[list[str]] = Field(None, description="text models: the sentences")
    frames: Optional[list[Frames]] = Field(None, description="frame models: sequences of frames, in the data's units")
    unknown: Unknown = Field("refuse", description=UNKNOWN_HELP)

    def inputs(self, is_text: bool) -> list:
        """The inputs this model reads: `sentences` for a text model, `frames` for a frame model."""
        wanted, other = ("sentences", "frames") if is_text else ("frames", "sentences")
        kind = "text" if is_text else "frames"
        if other in self.model_fields_set:
            raise RequestError(f"{other}: this model reads {kind}; send {wanted}")
        if not is_text:
            self.refuse_fields(("unknown",), "only text models have a vocabulary")
        value = getattr(self, wanted)
        if value is None:
            raise RequestError(f"{wanted}: required (this model reads {kind})")
        return value


class SampleRequest(Request):
    n: int = Field(1, description="how many samples from the prior")
    seed: int = 0
    temperature: float = Field(1.0, description="text: sampling temperature")
    greedy: bool = Field(False, description="text: the likeliest word at each step instead of a sampled one")
    max_len: int = Field(40, description="text: the longest sentence decoded, in tokens")
    # ge=1: ModelOperations.sample reads a falsy `steps` as "the default length"; 0 must be refused, not defaulted.
    steps: Optional[int] = Field(None, ge=1, description="frames: time steps per sample (default: the training "
                                                         "data's mean length)")
    render: bool = Field(False, description="frames: also return the samples rendered as files (wav, MIDI, PNG)")

    TEXT_ONLY: ClassVar[tuple[str, ...]] = ("temperature", "greedy", "max_len")
    FRAMES_ONLY: ClassVar[tuple[str, ...]] = ("steps", "render")

    def options(self, is_text: bool) -> dict:
        if is_text:
            self.refuse_fields(self.FRAMES_ONLY, "only frame models sample frames; send max_len for text")
            return dict(n=self.n, seed=self.seed, temperature=self.temperature, greedy=self.greedy,
                        max_len=self.max_len)
        self.refuse_fields(self.TEXT_ONLY, "only text models decode words; send steps for frames")
        return dict(n=self.n, seed=self.seed, steps=self.steps)


class ReconstructRequest(InputsRequest):
    max_len: int = Field(40, description="the longest sentence decoded, in tokens")


class EncodeRequest(InputsRequest):
    pass


class ScoreRequest(InputsRequest):
    samples: int = Field(100, description="importance samples per sequence")
    seed: int = 0


class InterpolateRequest(Request):
    first: Input = Field(description="where the path starts: a sentence, or a sequence of frames")
    second: Input = Field(description="where it ends")
    steps: int = Field(7, description="points on the path, both ends included")
    max_len: int = Field(40, description="the longest sentence decoded, in tokens")
    unknown: Unknown = Field("refuse", description=UNKNOWN_HELP)


# Answers
class Answer(BaseModel):
    model: str = Field(description="the registered model's name, or the checkpoint")
    model_version: Optional[str] = Field(description="the registered version that answered (null: a checkpoint)")


class MediaFile(BaseModel):
    name: str
    media_type: str
    base64: str


class SampleAnswer(Answer):
    sentences: Optional[list[str]] = None
    frames: Optional[list[Frames]] = None
    files: Optional[list[MediaFile]] = Field(None, description="with render: each sample's files, in order")


class ReconstructAnswer(Answer):
    sentences: list[str] = Field(description="each input's posterior mean, decoded greedily")


class EncodeAnswer(Answer):
    mean: list[list[float]] = Field(description="each input's posterior mean of z")
    variance: list[list[float]] = Field(description="each input's posterior variance of z (diagonal)")


class InterpolateAnswer(Answer):
    t: list[float] = Field(description="where each point lies between first (0) and second (1)")
    sentences: list[str]


class Score(BaseModel):
    elbo: float = Field(description="evidence lower bound on log p(x), nats")
    iw_ll: float = Field(description="importance-weighted estimate of log p(x), nats")
    steps: int = Field(description="tokens or time steps scored")
    elbo_per_step: float
    iw_ll_per_step: float
    samples: int = Field(description="importance samples drawn (1 for a model without a latent: exact)")
    kl: Optional[float] = None
    posterior_mean: Optional[list[float]] = None


class ScoreAnswer(Answer):
    scores: list[Score] = Field(description="one per input, in order")


class Info(Answer):
    uri: str = Field(description="what the service was started with")
    follows: Optional[str] = Field(description="the alias followed, if any")
    family: str = Field(description="the model family (sentence-vae, vrnn, ...)")
    modality: str
    operations: list[str] = Field(description="the operations this model answers")
    inputs: str = Field(description="what requests carry: sentences or frames")
    frame_dim: Optional[int] = None
    vocabulary_size: Optional[int] = None
    limits: dict[str, int]
    loaded_at: float = Field(description="when this version was loaded (Unix time)")
    follow_problem: Optional[str] = Field(None, description="why the alias could not be followed lately")
