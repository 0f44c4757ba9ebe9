import pytest

from pipelines.errors import SeqlvmError
from seqlvm.training.spec import RunSpec


def test_file_and_overrides_fill_the_dataclasses(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_name: sentence-vae\nmodel:\n  latent_dim: 7\ntrain:\n  lr: 1e-2\n")
    run = RunSpec.build(path, ["train.batch_size=8", "average_hidden=true", "max_steps=null", "kl_anneal=linear"])
    model_config = run.model
    assert model_config.latent_dim == 7 and model_config.average_hidden is True
    assert run.train.lr == 0.01 and run.train.batch_size == 8 and run.train.max_steps is None
    assert run.train.kl_anneal == "linear"


def test_unknown_key_in_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  latnt_dim: 7\n")
    with pytest.raises(SeqlvmError, match=r"c.yaml: unknown config key 'model.latnt_dim'"):
        RunSpec.build(path)


def test_exponent_floats_are_numbers():
    run = RunSpec.build(None, ["train.lr=1e-3", "kl_anneal_rate=2E-4"])
    assert run.train.lr == 0.001 and run.train.kl_anneal_rate == 0.0002
    with pytest.raises(SeqlvmError, match="train.lr has the wrong type"):
        RunSpec.build(None, ["train.lr=fast"])


def test_bad_overrides_are_rejected():
    with pytest.raises(SeqlvmError, match="unknown config key 'train.nope'"):
        RunSpec.build(None, ["train.nope=1"])
    with pytest.raises(SeqlvmError, match="must be an integer"):
        RunSpec.build(None, ["train.batch_size=2.5"])
    with pytest.raises(SeqlvmError, match="kl_anneal"):
        RunSpec.build(None, ["train.kl_anneal=cosine"])
    with pytest.raises(SeqlvmError, match="key=value"):
        RunSpec.build(None, ["lr"])
    with pytest.raises(SeqlvmError, match="word_keep_rate"):
        RunSpec.build(None, ["model.word_keep_rate=1.5"])


def test_model_name_picks_the_config_class():
    run = RunSpec.build(None, ["hidden_dim=9"], model_name="rnnlm")
    assert run.model_name == "rnnlm" and run.model.hidden_dim == 9
    with pytest.raises(SeqlvmError, match="unknown config key 'latent_dim'"):
        RunSpec.build(None, ["latent_dim=3"], model_name="rnnlm")
    with pytest.raises(SeqlvmError, match="unknown model"):
        RunSpec.build(None, [], model_name="transformer")


def test_packaged_configs_are_valid():
    from pathlib import Path

    import seqlvm
    configs = sorted((Path(seqlvm.__file__).parent / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        RunSpec.build(path)


def test_a_sweep_varies_the_spec_with_checked_values_and_checkpoints_round_trip_it():
    run = RunSpec.build(None, ["train.lr=1e-3"])
    varied = run.with_values({"train.lr": 0.02, "model.latent_dim": 5, "kl_anneal": "linear"})
    assert (varied.train.lr, varied.model.latent_dim, varied.train.kl_anneal) == (0.02, 5, "linear")
    assert run.train.lr == 0.001 and run.model.latent_dim != 5  # the base is untouched
    with pytest.raises(SeqlvmError, match="word_keep_rate"):
        run.with_values({"model.word_keep_rate": 2.0})
    with pytest.raises(SeqlvmError, match="unknown config key 'train.nope'"):
        run.with_values({"train.nope": 1})
    assert RunSpec.from_dict(varied.to_dict()) == varied
