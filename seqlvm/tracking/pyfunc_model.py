"""The code of a registered seqlvm model, logged as an MLflow "model from code": `mlflow.pyfunc.load_model`
runs this file (with the seqlvm and pipelines packages the model carries on its path) and the weights come from
the version's `checkpoint` artifact. Only MLflow imports this module."""
from __future__ import annotations

import json
from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class SeqlvmPyfunc(mlflow.pyfunc.PythonModel):
    """A registered seqlvm model for `mlflow.pyfunc.load_model`, answering as `seqlvm serve` does
    (`seqlvm.operations`). The `mode` parameter picks the operation; a row is one input.

    Text models read a `sentence` column (tokenised as the model's corpus was prepared):
    - `auto` (the default): an empty sentence asks for a sample from the prior, any other is reconstructed
      (its posterior mean decoded); output `sentence`, `output`, `source` (prior or posterior);
    - `sample`: one prior sample a row; `reconstruct`: every row's posterior decode (output as in auto);
    - `encode`: `mean` and `variance` of q(z|x), JSON lists; `score`: `elbo`, `iw_ll` (nats), `steps`,
      `elbo_per_step`, `iw_ll_per_step`, `kl` (where the model has one) with `samples` importance samples.
    Frame models read `steps` (sample, the default: one prior sample of that many steps a row, output `frames`, a
    JSON list of frames in the data's units) or `frames` (score: a JSON list of frames in the data's units).
    Params: mode, temperature, greedy, seed, max_len, samples, unknown ("refuse" a word outside the vocabulary,
    or "map" it to <unk>). A bad input is refused in one line (an MLflow INVALID_PARAMETER_VALUE error: a 400
    behind `mlflow models serve`).
    """

    def load_context(self, context):
        from seqlvm.checkpoint import load_model
        from seqlvm.operations import ModelOperations
        self.operations = ModelOperations(load_model(context.artifacts["checkpoint"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from seqlvm.operations import DEFAULT_OPTIONS, RequestError
        options = {"mode": "auto", **DEFAULT_OPTIONS, **(params or {})}
        try:
            if self.operations.is_text:
                return self._text(pd.DataFrame(model_input), options)
            return self._frames(pd.DataFrame(model_input), options)
        except RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None

    def _text(self, model_input: pd.DataFrame, options: dict) -> pd.DataFrame:
        from seqlvm.operations import RequestError
        ops, mode, unknown = self.operations, options["mode"], options["unknown"]
        sentences = [str(s) for s in model_input["sentence"].fillna("")] if "sentence" in model_input else []
        if mode == "encode":
            mean, variance = ops.encode(sentences, unknown=unknown)
            return pd.DataFrame({"sentence": sentences, "mean": [json.dumps(m.tolist()) for m in mean],
                                 "variance": [json.dumps(v.tolist()) for v in variance]})
        if mode == "score":
            scores = ops.score(sentences, samples=int(options["samples"]), seed=int(options["seed"]),
                               unknown=unknown)
            scores.pop("posterior_mean", None)
            return pd.DataFrame({"sentence": sentences, **scores})
        if mode not in ("auto", "sample", "reconstruct"):
            raise RequestError(f"mode={mode!r}: one of auto, sample, reconstruct, encode, score")
        from_posterior = [mode == "reconstruct" or (mode == "auto" and bool(s.strip())) for s in sentences]
        prompts = [s for s, posterior in zip(sentences, from_posterior) if posterior]
        prior_count = len(sentences) - len(prompts)
        prior = iter(ops.sample(prior_count, temperature=float(options["temperature"]),
                                greedy=bool(options["greedy"]), seed=int(options["seed"]),
                                max_len=int(options["max_len"])) if prior_count else [])
        posterior = iter(ops.reconstruct(prompts, max_len=int(options["max_len"]), unknown=unknown)
                         if prompts else [])
        outputs = [(next(posterior), "posterior") if p else (next(prior), "prior") for p in from_posterior]
        return pd.DataFrame({"sentence": sentences, "output": [o for o, _ in outputs],
                             "source": [source for _, source in outputs]})

    def _frames(self, model_input: pd.DataFrame, options: dict) -> pd.DataFrame:
        from seqlvm.operations import RequestError
        ops, mode = self.operations, options["mode"]
        if mode == "score":
            if "frames" not in model_input:
                raise RequestError("mode='score' reads a `frames` column: a JSON list of frames a row")
            frames = [json.loads(f) for f in model_input["frames"]]
            scores = ops.score(frames, samples=int(options["samples"]), seed=int(options["seed"]))
            return pd.DataFrame(scores)
        if mode not in ("auto", "sample"):
            raise RequestError(f"mode={mode!r}: a {ops.data.modality} model can sample or score")
        if "steps" not in model_input:
            raise RequestError("sampling reads a `steps` column: the length of each sample")
        steps = [int(n) for n in model_input["steps"]]
        seed = int(options["seed"])
        samples = [ops.sample(1, steps=n, seed=seed + i)[0] for i, n in enumerate(steps)]
        return pd.DataFrame({"steps": steps, "frames": [json.dumps(s.round(5).tolist()) for s in samples]})


mlflow.models.set_model(SeqlvmPyfunc())
