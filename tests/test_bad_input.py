"""Bad input to every command: each case gets exit code 2, one line on stderr naming the problem, no traceback,
and leaves every file that existed before (a dataset, checkpoints, an MLflow store with a registered model)
byte-identical. No case starts Ray: what needs Ray is refused before it starts."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from seqlvm import cli, tracking

FIXTURES = Path(__file__).parent / "fixtures"
DEAD_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens
LAUNCHER_CONFIG = Path(__file__).parents[1] / "infra/cluster-launcher/aws.yaml"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a prepared dataset, a frame dataset's checkpoint, a text checkpoint and broken ones, config
    files, corpora, and an MLflow store with one registered model."""
    root = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(FIXTURES / "datasets" / "tiny-text", root / "data")
    (root / "ckpt").mkdir()
    shutil.copy(FIXTURES / "checkpoints" / "sentence-vae.pt", root / "ckpt" / "model.pt")
    shutil.copy(FIXTURES / "checkpoints" / "vrnn.pt", root / "vrnn.pt")
    whole = (root / "ckpt" / "model.pt").read_bytes()
    (root / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    torch.save({"state_dict": {}, "hook": os.system}, root / "code.pt")  # a pickle that would import code
    (root / "not-a-checkpoint.pt").write_text("hello")
    files = {
        "bad.yaml": "model: [unclosed\n", "list.yaml": "- a\n- b\n", "unknown-top.yaml": "modle: {}\n",
        "negative.yaml": "model: {hidden_dim: -3}\n", "wrong-type.yaml": "train: {lr: fast}\n",
        "section-not-map.yaml": "model: 3\n", "bad-space.yaml": "tune:\n  space:\n    train.lr: {normal: [1, 2]}\n",
        "bad-guard.yaml": "tune:\n  min_kl: -1\n", "unknown-tune.yaml": "tune:\n  min_entropy: 1\n",
        "space-key.yaml": "tune:\n  space:\n    model.nosuch: {uniform: [0, 1]}\n",
        "space-range.yaml": "tune:\n  space:\n    train.lr: {loguniform: [0.1, 0.01]}\n",
        "space-untrainable.yaml": "tune:\n  space:\n    model.hidden_dim: {int: [-3, 8]}\n",
        "space-keep.yaml": "tune:\n  space:\n    model.word_keep_rate: {uniform: [0.5, 1.5]}\n",
        "autoscaling.yaml": "available_node_types:\n  head: {resources: {CPU: 4}}\nhead_node_type: head\n",
        "empty.txt": "", "corpus.txt": "the king is dead .\nlong live the king .\n" * 20,
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "latin1.txt").write_bytes("caf\xe9 au lait .\n".encode("latin-1") * 20)
    (root / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    (root / "folder.yaml").mkdir()
    uri = tracking.resolve_tracking_uri(f"sqlite:///{root / 'store' / 'mlflow.db'}", root / "store")
    tracking.ensure_experiment(uri, "seqlvm", root / "store")
    from seqlvm.tracking import registry
    client = tracking.client(uri)
    run_id = client.create_run(client.get_experiment_by_name("seqlvm").experiment_id).info.run_id
    registry.register_checkpoint(uri, run_id, root / "ckpt" / "model.pt", "tiny", {"seqlvm.data_fingerprint": "x"},
                                 {"source": "tiny.txt"})
    return root


def uri(ws: Path) -> str:
    return f"sqlite:///{ws / 'store' / 'mlflow.db'}"


TRAIN = ["train", "--data", "{ws}/data", "--workdir", "{ws}/runs"]
TUNE = ["tune", "--data", "{ws}/data", "--workdir", "{ws}/runs"]

# (case, command line with {ws} and {uri}, words the error line must contain)
CASES = [
    # prepare
    ("prepare: a source file that does not exist",
     ["prepare", "text", "--source", "{ws}/nope.txt", "--out", "{ws}/new"], "nope.txt"),
    ("prepare: an unknown built-in corpus", ["prepare", "text", "--source", "builtin:nope", "--out", "{ws}/new"],
     "builtin:nope"),
    ("prepare: over a dataset prepared differently",
     ["prepare", "text", "--source", "{ws}/corpus.txt", "--out", "{ws}/data"], "--overwrite"),
    ("prepare: an empty corpus", ["prepare", "text", "--source", "{ws}/empty.txt", "--out", "{ws}/new"], "empty.txt"),
    ("prepare: a corpus that is not UTF-8", ["prepare", "text", "--source", "{ws}/latin1.txt", "--out", "{ws}/new"],
     "latin1.txt"),
    ("prepare: a validation share above 1",
     ["prepare", "text", "--source", "{ws}/corpus.txt", "--out", "{ws}/new", "--valid-fraction", "2"],
     "--valid-fraction"),
    ("prepare: a negative vocabulary",
     ["prepare", "text", "--source", "{ws}/corpus.txt", "--out", "{ws}/new", "--vocab-size", "-5"], "--vocab-size -5"),
    ("prepare: a corrupt MIDI file", ["prepare", "midi", "--source", "{ws}/corrupt.mid", "--out", "{ws}/new"],
     "corrupt.mid"),
    ("prepare: an unknown modality", ["prepare", "video", "--source", "x", "--out", "{ws}/new"],
     "invalid choice: 'video'"),
    ("prepare: a vocabulary that is not a number",
     ["prepare", "text", "--source", "{ws}/corpus.txt", "--out", "{ws}/new", "--vocab-size", "many"],
     "--vocab-size: invalid int value: 'many'"),
    # train: data and files
    ("train: data that does not exist", ["train", "--data", "{ws}/nope", "--workdir", "{ws}/runs"],
     "nope: not a prepared dataset"),
    ("train: a folder that is not prepared data", ["train", "--data", "{ws}/ckpt", "--workdir", "{ws}/runs"],
     "ckpt: not a prepared dataset"),
    ("train: a config file that does not exist", [*TRAIN, "--config", "{ws}/nope.yaml"], "nope.yaml"),
    ("train: a config that is not YAML", [*TRAIN, "--config", "{ws}/bad.yaml"], "bad.yaml: not valid YAML"),
    ("train: a config that is a list", [*TRAIN, "--config", "{ws}/list.yaml"],
     "list.yaml: a config file must be a mapping"),
    ("train: a config with an unknown section", [*TRAIN, "--config", "{ws}/unknown-top.yaml"],
     "unknown-top.yaml: unknown top-level key 'modle'"),
    ("train: a config section that is not a mapping", [*TRAIN, "--config", "{ws}/section-not-map.yaml"],
     "section-not-map.yaml: `model:` must be a mapping"),
    ("train: a config path that is a folder", [*TRAIN, "--config", "{ws}/folder.yaml"], "folder.yaml"),
    ("train: a negative size in the config", [*TRAIN, "--config", "{ws}/negative.yaml"],
     "negative.yaml: model.hidden_dim: -3 is not a positive integer"),
    ("train: a word for a number in the config", [*TRAIN, "--config", "{ws}/wrong-type.yaml"],
     "wrong-type.yaml: train.lr has the wrong type"),
    # train: values
    ("train: a negative hidden size", [*TRAIN, "model.hidden_dim=-3"],
     "model.hidden_dim: -3 is not a positive integer"),
    ("train: a zero embedding", [*TRAIN, "model.embedding_dim=0"], "model.embedding_dim: 0 is not a positive integer"),
    ("train: a hidden size that is not a number", [*TRAIN, "model.hidden_dim=abc"],
     "model.hidden_dim has the wrong type"),
    ("train: a fractional size", [*TRAIN, "model.hidden_dim=2.5"], "model.hidden_dim must be an integer"),
    ("train: no latent dimensions", [*TRAIN, "model.latent_dim=0"], "model.latent_dim: 0 is not a positive integer"),
    ("train: no latent samples", [*TRAIN, "model.latent_samples=0"],
     "model.latent_samples: 0 is not a positive integer"),
    ("train: a keep rate above 1", [*TRAIN, "model.word_keep_rate=2"],
     "model.word_keep_rate: 2.0 is not a number in [0, 1]"),
    ("train: negative free bits", [*TRAIN, "model.free_bits=-1"], "model.free_bits: -1.0 is not a number >= 0"),
    ("train: a boolean that is not one", [*TRAIN, "model.z_every_step=maybe"],
     "model.z_every_step must be true or false"),
    ("train: an unknown model key", [*TRAIN, "model.nosuch=1"], "unknown config key 'model.nosuch'"),
    ("train: an unknown section", [*TRAIN, "optim.lr=1"], "unknown config key 'optim.lr'"),
    ("train: an override without a value", [*TRAIN, "lr"], "override 'lr' is not of the form key=value"),
    ("train: a learning rate that is a word", [*TRAIN, "train.lr=fast"], "train.lr has the wrong type"),
    ("train: batches of none", [*TRAIN, "train.batch_size=0"], "train.batch_size: 0 is not a positive integer"),
    ("train: no epochs", [*TRAIN, "train.epochs=0"], "train.epochs: 0 is not a positive integer"),
    ("train: evaluations never", [*TRAIN, "train.eval_every=0"], "train.eval_every: 0 is not a positive integer"),
    ("train: an unknown schedule", [*TRAIN, "train.kl_anneal=cosine"], "train.kl_anneal must be one of"),
    ("train: a cycle that never rises", [*TRAIN, "train.kl_anneal=cyclical", "train.kl_cycle_rise=0"],
     "train.kl_cycle_rise: 0.0 is not a number in (0, 1]"),
    ("train: an unknown optimiser", [*TRAIN, "train.optimizer=rmsprop"], "train.optimizer must be adam or sgd"),
    ("train: an unknown precision", [*TRAIN, "train.mixed_precision=fp8"], "train.mixed_precision must be"),
    ("train: no workers", [*TRAIN, "--workers", "0"], "--workers must be at least 1"),
    ("train: workers with no CPU", [*TRAIN, "--cpus-per-worker", "0"], "--cpus-per-worker"),
    ("train: more CPUs than the machine has", [*TRAIN, "--workers", "64", "--cpus-per-worker", "8"],
     "--workers 64 x --cpus-per-worker 8 asks for more CPUs"),
    ("train: GPUs the machine does not have", [*TRAIN, "train.use_gpu=true"], "train.use_gpu=true with 1 workers"),
    ("train: an unknown model", [*TRAIN, "--model", "nosuch"], "unknown model 'nosuch'"),
    ("train: a frame model on text", [*TRAIN, "--model", "vrnn"], "model 'vrnn' does not read 'text' data"),
    ("train: steps that are not a number", [*TRAIN, "--max-steps", "many"], "--max-steps: invalid int value"),
    ("train: a tracking server that does not answer", [*TRAIN, "--tracking-uri", DEAD_SERVER],
     "http://127.0.0.1:9 is not reachable"),
    # tune
    ("tune: no data", ["tune", "--workdir", "{ws}/runs"], "--data"),
    ("tune: no trials", [*TUNE, "--num-samples", "0", "--max-steps", "400"], "--num-samples must be at least 1"),
    ("tune: an unknown search", [*TUNE, "--search", "grid"], "--search: invalid choice: 'grid'"),
    ("tune: no training length", [*TUNE], "train.max_steps"),
    ("tune: a run shorter than its first evaluation", [*TUNE, "--max-steps", "30"],
     "train.eval_every (200) is longer than the run (30 steps)"),
    ("tune: a search space of an unknown kind", [*TUNE, "--max-steps", "400", "--config", "{ws}/bad-space.yaml"],
     "bad-space.yaml: tune.space.train.lr needs exactly one of"),
    ("tune: a search space over an unknown key", [*TUNE, "--max-steps", "400", "--config", "{ws}/space-key.yaml"],
     "space-key.yaml: tune.space.model.nosuch=0.0: unknown config key 'model.nosuch'"),
    ("tune: a search range upside down", [*TUNE, "--max-steps", "400", "--config", "{ws}/space-range.yaml"],
     "space-range.yaml: tune.space.train.lr.loguniform needs low < high"),
    ("tune: a search range the model cannot train with",
     [*TUNE, "--max-steps", "400", "--config", "{ws}/space-untrainable.yaml"],
     "space-untrainable.yaml: tune.space.model.hidden_dim=-3: model.hidden_dim: -3 is not a positive integer"),
    ("tune: a search range beyond a value's bounds", [*TUNE, "--max-steps", "400", "--config", "{ws}/space-keep.yaml"],
     "space-keep.yaml: tune.space.model.word_keep_rate=1.5: model.word_keep_rate: 1.5 is not a number in [0, 1]"),
    ("tune: a negative collapse guard", [*TUNE, "--max-steps", "400", "--config", "{ws}/bad-guard.yaml"],
     "bad-guard.yaml: tune.min_kl must be a number >= 0"),
    ("tune: an unknown tune key", [*TUNE, "--max-steps", "400", "--config", "{ws}/unknown-tune.yaml"],
     "unknown-tune.yaml: unknown key tune.min_entropy"),
    ("tune: a guard that is not a number", [*TUNE, "--min-mutual-info", "lots"],
     "--min-mutual-info: invalid float value: 'lots'"),
    ("tune: a bad model value", [*TUNE, "--max-steps", "400", "model.hidden_dim=-3"],
     "model.hidden_dim: -3 is not a positive integer"),
    ("tune: nothing to resume", ["tune", "--resume", "--workdir", "{ws}/runs"], "no sweep to resume"),
    # evaluate and sample
    ("evaluate: a checkpoint that does not exist", ["evaluate", "{ws}/nope.pt"], "nope.pt: no such checkpoint"),
    ("evaluate: a truncated checkpoint", ["evaluate", "{ws}/truncated.pt", "--data", "{ws}/data"],
     "truncated.pt: not a loadable seqlvm checkpoint"),
    ("evaluate: a checkpoint that carries code", ["evaluate", "{ws}/code.pt", "--data", "{ws}/data"],
     "code.pt: not a loadable seqlvm checkpoint"),
    ("evaluate: a file that is no checkpoint", ["evaluate", "{ws}/not-a-checkpoint.pt"],
     "not-a-checkpoint.pt: not a loadable seqlvm checkpoint"),
    ("evaluate: an unknown split", ["evaluate", "{ws}/ckpt", "--split", "dev"], "--split: invalid choice: 'dev'"),
    ("evaluate: frames data for a text model", ["evaluate", "{ws}/vrnn.pt", "--data", "{ws}/data"],
     "data: text data, but the model was trained on midi frames of 88 values"),
    ("evaluate: a registered model that does not exist",
     ["evaluate", "models:/nosuch@champion", "--tracking-uri", "{uri}"], "Registered Model with name=nosuch not found"),
    ("evaluate: an alias that does not exist", ["evaluate", "models:/tiny@champion", "--tracking-uri", "{uri}"],
     "models:/tiny@champion: cannot download"),
    ("evaluate: a registry that does not answer", ["evaluate", "models:/tiny/1", "--tracking-uri", DEAD_SERVER],
     "http://127.0.0.1:9 is not reachable"),
    ("sample: a checkpoint that does not exist", ["sample", "{ws}/nope.pt"], "nope.pt: no such checkpoint"),
    ("sample: a truncated checkpoint", ["sample", "{ws}/truncated.pt"],
     "truncated.pt: not a loadable seqlvm checkpoint"),
    ("sample: a checkpoint that carries code", ["sample", "{ws}/code.pt"], "code.pt: not a loadable seqlvm checkpoint"),
    ("sample: a homotopy of a frame model", ["sample", "{ws}/vrnn.pt", "--between", "a", "b", "--no-log"],
     "--sentence and --between need a text model"),
    ("sample: a version that does not exist", ["sample", "models:/tiny/7", "--tracking-uri", "{uri}"],
     "models:/tiny/7: cannot download"),
    # registry
    ("registry: no store here", ["registry", "list", "--tracking-uri", "sqlite:///{ws}/nostore/mlflow.db"],
     "no MLflow store"),
    ("registry: a server that does not answer", ["registry", "list", "--tracking-uri", DEAD_SERVER],
     "http://127.0.0.1:9 is not reachable"),
    ("registry: an unknown model", ["registry", "show", "nosuch", "--tracking-uri", "{uri}"],
     "no registered model named 'nosuch'"),
    ("registry: promoting an unknown version", ["registry", "promote", "tiny", "9", "--tracking-uri", "{uri}"],
     "tiny: cannot promote version 9"),
    ("registry: promoting in an unknown model", ["registry", "promote", "nosuch", "1", "--tracking-uri", "{uri}"],
     "no registered model named 'nosuch'"),
    ("registry: rolling back with no history", ["registry", "rollback", "tiny", "--tracking-uri", "{uri}"],
     "tiny: no earlier champion to roll back to"),
    ("registry: an unknown action", ["registry", "delete", "tiny"], "invalid choice: 'delete'"),
    # cluster jobs
    ("submit: a cluster that does not answer", ["submit", "--address", DEAD_SERVER, "--", "seqlvm", "models"],
     "cannot reach the Ray Jobs API at http://127.0.0.1:9"),
    ("submit: a GCS address for the Jobs API", ["submit", "--address", "127.0.0.1:6379", "--", "seqlvm", "models"],
     "127.0.0.1:6379: the Jobs API needs the dashboard's http address"),
    ("submit: a secret in the job's environment",
     ["submit", "--address", DEAD_SERVER, "--env", "AWS_SECRET_ACCESS_KEY=x", "--", "seqlvm", "models"],
     "AWS_SECRET_ACCESS_KEY"),
    ("jobs: a cluster that does not answer", ["jobs", "list", "--address", DEAD_SERVER],
     "cannot reach the Ray Jobs API at http://127.0.0.1:9"),
    ("train: a cluster address where no Ray answers", [*TRAIN, "--address", "127.0.0.1:9"],
     "no Ray cluster answers at 127.0.0.1:9"),
    ("tune: a Jobs API address to join", [*TUNE, "--address", DEAD_SERVER], "http://127.0.0.1:9 is a Jobs API address"),
    ("cluster report-max: a cluster address where no Ray answers",
     ["cluster", "report-max", "--autoscaling-config", "{ws}/autoscaling.yaml", "--address", "127.0.0.1:9"],
     "no Ray cluster answers at 127.0.0.1:9"),
    ("cluster report-max: a config that does not exist",
     ["cluster", "report-max", "--autoscaling-config", "{ws}/nope.yaml"],
     "nope.yaml: cannot read the autoscaling config"),
    ("cluster report-max: node types without their resources (the launcher's file, not the head's)",
     ["cluster", "report-max", "--autoscaling-config", str(LAUNCHER_CONFIG)], "'cpu' names no CPU count"),
    ("cluster report-max: a file with no node types",
     ["cluster", "report-max", "--autoscaling-config", "{ws}/corpus.txt"], "corpus.txt: no available_node_types"),
    ("no command at all", [], "the following arguments are required: command"),
]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and os.access(p, os.R_OK)}


def test_the_table_is_large():
    assert len(CASES) >= 60 and len({case for case, _, _ in CASES}) == len(CASES)


def test_every_case_with_a_config_key_asserts_that_its_error_names_it():
    for case, argv, words in CASES:
        keys = [arg.split("=", 1)[0] for arg in argv if "=" in arg and "." in arg.split("=", 1)[0]]
        assert not keys or any(key in words for key in keys), f"{case}: {words!r} names none of {keys}"


@pytest.mark.parametrize("case, argv, words", CASES, ids=[case for case, _, _ in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(ws, case, argv, words, capsys, monkeypatch):
    if "train.use_gpu" in words and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = snapshot(ws)
    argv = [arg.format(ws=ws, uri=uri(ws)) for arg in argv]
    import ray
    starts = []  # whatever Ray this test session runs, a command that would start or join one is seen here
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: starts.append(args or kwargs))
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, f"{case}: exit code {code}\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"{case}: {len(lines)} lines on stderr:\n{err}"
    assert "Traceback" not in err and words in lines[0], f"{case}: {lines[0]!r} does not name {words!r}"
    assert snapshot(ws) == before, f"{case}: files changed"
    assert not starts, f"{case}: Ray was started"
