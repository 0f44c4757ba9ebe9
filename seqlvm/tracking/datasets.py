"""A prepared corpus as an MLflow dataset input of a run: what the UI lists under a run's *Datasets*, named for the
corpus, with its location as the source, its fingerprint as the digest and its split sizes as the profile."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.dataset import PreparedDataset
from pipelines.shards import is_uri
from seqlvm.tracking.runs import client

TRAINING_CONTEXT = "training"


def corpus_of(source: str) -> str:
    """`shakespeare` for `builtin:shakespeare`, `corpus.txt` for `/data/corpus.txt`; empty for no source."""
    return Path(source.split(":", 1)[-1].rstrip("/")).name


def corpus_name(dataset: PreparedDataset) -> str:
    """The corpus a dataset was prepared from, else its folder's name."""
    return corpus_of(dataset.source) or Path(dataset.location.rstrip("/")).name


def mlflow_dataset(dataset: PreparedDataset):
    """The `mlflow.entities.Dataset` of a prepared corpus. The source is JSON `{"uri": ...}` with the type MLflow's
    own file sources use (`local`, or the URI's scheme such as `s3`), so that the UI shows the location."""
    from mlflow.entities import Dataset
    from mlflow.utils.validation import MAX_DATASET_DIGEST_SIZE

    source_type = dataset.location.split("://", 1)[0] if is_uri(dataset.location) else "local"
    profile = {split: {"sequences": counts.sequences, "steps": counts.steps}
               for split, counts in dataset.splits.items()}
    return Dataset(name=corpus_name(dataset), digest=dataset.fingerprint[:MAX_DATASET_DIGEST_SIZE],
                   source_type=source_type, source=json.dumps({"uri": dataset.location}),
                   profile=json.dumps(profile))


def log_training_dataset(tracking_uri: str, run_id: str, dataset: PreparedDataset) -> None:
    """Log the corpus as the run's training input. Logging it again (a resumed run) adds nothing: MLflow's stores
    keep one dataset per name and digest, and one input per dataset and run. Two runs that log the same new
    dataset at once race to insert it, and the loser's request fails on the store's unique constraint: its
    second try finds the dataset there."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = [DatasetInput(mlflow_dataset(dataset), [InputTag(MLFLOW_DATASET_CONTEXT, TRAINING_CONTEXT)])]
    try:
        client(tracking_uri).log_inputs(run_id, inputs)
    except MlflowException as exc:
        if "unique constraint" not in str(exc).lower():
            raise
        client(tracking_uri).log_inputs(run_id, inputs)
