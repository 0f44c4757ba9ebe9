"""`seqlvm evaluate`, and the evaluation at the end of a run and of a sweep: a checkpoint's metrics on a split of
data like its training data."""
from __future__ import annotations

from pipelines.dataset import PreparedDataset
from pipelines.description import DataDescription
from pipelines.errors import SeqlvmError
from pipelines.stream import local_batches
from seqlvm.checkpoint import load_model
from seqlvm.evaluation import evaluate
from seqlvm.scoring import InProcess, ScoreJob, importance_weighted
from seqlvm.scoring.job import Placement

DECODED_SENTENCES = 500  # posterior decodes scored by an evaluation: enough for a share of distinct ones


def evaluate_checkpoint(checkpoint: str, data_dir: str | None, split: str = "test", iw_samples: int = 500,
                        batch_size: int = 64, limit: int | None = None,
                        tracking_uri: str | None = None, console=None, seed: int = 0, word_samples: int = 100,
                        decodes: int = DECODED_SENTENCES, scoring: Placement | None = None) -> dict:
    """Metrics of a checkpoint on a split. Seeded, so two checkpoints compared on the same data see the same
    noise in their sampled bounds. With a global latent, its use (`seqlvm.latent_use`), the posterior decodes'
    metrics over a sample of `decodes` sentences. On a words dataset, also the word task's metrics
    (cross-entropies to the word distributions with `word_samples` importance samples a word, samples in the
    vocabulary, mutual information).

    The one-sample figures are computed here; the importance-weighted NLL is summed from the rows `seqlvm score`
    gives (`seqlvm.scoring`, each sequence's samples drawn from (seed, row)), scored where `scoring` says: in this
    process by default, or `OnRay(replicas)`; a sequence's samples are decoded in chunks that fit the logits
    budget."""
    import torch

    torch.manual_seed(seed)
    loaded = load_model(checkpoint, tracking_uri)
    model = loaded.model
    data_dir = data_dir or loaded.data.location
    if not data_dir:
        raise SeqlvmError(f"{checkpoint}: the checkpoint does not record its data; pass --data DIR")
    dataset = PreparedDataset.open(data_dir)
    check_same_kind_of_data(loaded.data, dataset)
    sequences = dataset.read(split, limit)
    batches = list(local_batches(sequences, batch_size, bucket_factor=20))
    if console is not None:
        from rich.progress import track
        batches = track(batches, console=console, transient=True,
                        description=f"evaluating {len(sequences):,} sequences")
    metrics = evaluate(model, batches, decode_limit=decodes)
    if iw_samples:
        job = ScoreJob(loaded, dataset, split, iw_samples, seed, limit=limit)
        metrics.update(importance_weighted(job, scoring or InProcess(), console))
    if dataset.task == "words":
        from seqlvm.word_metrics import word_task_metrics
        if console is not None:
            console.print(f"word-task metrics: every word type, {word_samples} importance samples each")
        metrics.update(word_task_metrics(model, dataset, num_samples=word_samples))
    return metrics


def check_same_kind_of_data(trained_on: DataDescription, dataset: PreparedDataset) -> None:
    """A model evaluates only data like its training data: the same vocabulary, or frames of the same kind."""
    if trained_on.is_text:
        if not dataset.is_text or tuple(dataset.vocab.words) != trained_on.words:
            raise SeqlvmError(f"{dataset.location}: its vocabulary differs from the checkpoint's; "
                              "evaluate on data prepared with the same vocabulary")
        return
    if (dataset.modality, dataset.frame_dim) != (trained_on.modality, trained_on.frame_dim):
        given = "text data" if dataset.is_text else f"{dataset.modality} frames of {dataset.frame_dim} values"
        raise SeqlvmError(f"{dataset.location}: {given}, but the model was trained on {trained_on.modality} "
                          f"frames of {trained_on.frame_dim} values")
