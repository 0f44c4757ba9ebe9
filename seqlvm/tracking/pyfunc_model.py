"""The code of a registered seqlvm model, logged as an MLflow "model from code": `mlflow.pyfunc.load_model`
runs this file (with the seqlvm and pipelines packages the model carries on its path) and the weights come from
the version's `checkpoint` artifact. Only MLflow imports this module."""
from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class SeqlvmPyfunc(mlflow.pyfunc.PythonModel):
    """A registered seqlvm model for `mlflow.pyfunc.load_model`.

    Text models: a DataFrame with a `sentence` column. An empty sentence asks for a sample from the prior; any
    other sentence is encoded and its posterior mean decoded (a reconstruction). Params: temperature, greedy,
    seed, max_len. Output: the input column, `output` (decoded text) and `source` (prior or posterior).
    Frame models (speech, strokes, piano rolls): a `steps` column; each row asks for one prior sample of that
    many steps. Output: `steps` and `frames`, a JSON list of frames in the data's units. Param: seed.
    """

    def load_context(self, context):
        from seqlvm.checkpoint import load_model
        self.model, self.vocab, self.payload = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from seqlvm.models import FrameModel
        if isinstance(self.model, FrameModel):
            return self._predict_frames(pd.DataFrame(model_input), params or {})
        return self._predict_text(pd.DataFrame(model_input), params or {})

    def _predict_frames(self, model_input: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        import json

        import torch

        from pipelines.frames import denormalise
        torch.manual_seed(int(params.get("seed", 0)))
        steps = [int(n) for n in model_input["steps"]]
        samples = [denormalise(self.model.sample_prior(1, steps=n)[0].numpy(), self.payload["data_info"])
                   for n in steps]
        return pd.DataFrame({"steps": steps, "frames": [json.dumps(s.round(5).tolist()) for s in samples]})

    def _predict_text(self, model_input: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        import torch

        from seqlvm import generate

        options = {"temperature": 1.0, "greedy": False, "seed": 0, "max_len": 40, **params}
        torch.manual_seed(int(options["seed"]))
        sentences = [str(s) for s in model_input["sentence"].fillna("")]
        prompts = [s for s in sentences if s.strip()]
        prior_count = len(sentences) - len(prompts)
        max_len = int(options["max_len"])
        prior = iter(generate.from_prior(self.model, self.vocab, prior_count, greedy=bool(options["greedy"]),
                                         max_len=max_len, temperature=float(options["temperature"]))
                     if prior_count else [])
        posterior = iter(generate.reconstruct(self.model, self.vocab, prompts, max_len=max_len) if prompts else [])
        outputs = [(next(posterior), "posterior") if s.strip() else (next(prior), "prior") for s in sentences]
        return pd.DataFrame({"sentence": sentences, "output": [o for o, _ in outputs],
                             "source": [src for _, src in outputs]})


mlflow.models.set_model(SeqlvmPyfunc())
