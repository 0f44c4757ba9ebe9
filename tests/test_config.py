import dataclasses
import math
from pathlib import Path

import pytest

import seqlvm
from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from seqlvm.models import MODELS, model_class
from seqlvm.models.fields import Range
from seqlvm.training import load_config_file, try_one_step
from seqlvm.training.request import data_defaults
from seqlvm.training.spec import RunSpec, TrainConfig


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


CONFIGS = sorted((Path(seqlvm.__file__).parent / "configs").glob("*.yaml"))
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def rolls(tmp_path_factory) -> PreparedDataset:
    """The JSB slice in tests/fixtures, prepared: piano rolls for the frame models' configs."""
    from pipelines.midi import MidiOptions, prepare_midi

    out = tmp_path_factory.mktemp("rolls") / "jsb"
    prepare_midi(str(FIXTURES / "midi" / "jsb-slice.npz"), out, MidiOptions())
    return PreparedDataset.open(out)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_packaged_configs_build_their_model_and_train_one_step(path, rolls):
    """Each packaged config on data of its kind: the model it names is built and takes a training step on real
    sequences (a forward and a backward pass), through the check that runs before Ray."""
    text = PreparedDataset.open(FIXTURES / "datasets" / "tiny-text")
    name = load_config_file(path)["model_name"]
    dataset = text if "text" in model_class(name).modalities else rolls
    spec = RunSpec.build(path, model_defaults=data_defaults(dataset))
    assert spec.model_name == name
    try_one_step(spec, dataset, str(path))


def test_the_demo_sweeps_tune_section_is_a_search_space_whose_corners_train(tmp_path):
    """The README's main job: its `tune:` section becomes the search space and the collapse guard, every value at
    either end of a range is accepted by the spec, and the trials at the space's corners each train a step."""
    from tune.request import SweepRequest
    from tune.sweep import check_trials_run, sweep_space

    path = Path(seqlvm.__file__).parent / "configs" / "sweep-sentence-vae.yaml"
    dataset = PreparedDataset.open(FIXTURES / "datasets" / "tiny-text")
    request = SweepRequest(data_dir=str(dataset.location), config_file=str(path))
    spec = RunSpec.build(path)
    dims, guard = sweep_space(request, spec)
    section = load_config_file(path)["tune"]
    assert [d.name for d in dims] == list(section["space"])
    assert guard.min_mutual_info == section["min_mutual_info"] and guard.min_active_units == 1
    for dim in dims:
        low, high = dim.extremes()
        assert [low, high] == next(iter(v for k, v in section["space"][dim.name].items() if k != "log"))
        assert spec.with_values({dim.name: low}) != spec.with_values({dim.name: high})
    check_trials_run(dims, spec, dataset, str(path))


def test_every_number_in_a_config_declares_its_range():
    """Sizes, rates and counts are checked by the config itself (seqlvm/models/fields.py); a numeric field added
    without a range would reach PyTorch unchecked. The seed may be any integer."""
    for config_class in [cls.config_class for cls in MODELS.values()] + [TrainConfig]:
        for field in dataclasses.fields(config_class):
            default = getattr(config_class(), field.name)
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool) or "int" in str(field.type)
            if numeric and field.name != "seed":
                assert "range" in field.metadata, f"{config_class.__name__}.{field.name} declares no range"


@pytest.mark.parametrize("allowed, admitted, refused, said", [
    (Range(1, integer=True), [1, 7, 8.0], [0, -3, 2.5, True, "3", None, math.nan], "a positive integer"),
    (Range(0, integer=True), [0, 4], [-1, 0.5], "an integer >= 0"),
    (Range(0.0, 1.0), [0, 0.5, 1], [-0.1, 1.1, math.nan, math.inf], "a number in [0, 1]"),
    (Range(0.0, 0.5, low_open=True, high_open=True), [0.1, 0.49], [0, 0.5], "a number in (0, 0.5)"),
    (Range(0.0, low_open=True), [1e-9, 3.0], [0, -1, math.inf], "a positive number"),
    (Range(0.0), [0, 2.5], [-1e-9, math.inf], "a number >= 0"),
])
def test_a_range_admits_its_values_and_says_what_it_allows(allowed, admitted, refused, said):
    assert all(allowed.admits(value) for value in admitted)
    assert not any(allowed.admits(value) for value in refused)
    assert allowed.describe() == said


def test_a_value_outside_its_range_is_refused_naming_the_source_and_the_dotted_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  hidden_dim: -3\n")
    with pytest.raises(SeqlvmError) as refused:
        RunSpec.build(path)
    assert str(refused.value) == f"{path}: model.hidden_dim: -3 is not a positive integer"
    with pytest.raises(SeqlvmError, match=r"^overrides: train.lr: nan is not a positive number$"):
        RunSpec.build(None, ["train.lr=nan"])
    with pytest.raises(SeqlvmError, match=r"^trial 3: train.eval_batches: 0 is not a positive integer$"):
        RunSpec.build(None).with_values({"train.eval_batches": 0}, source="trial 3")


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


def test_a_token_budget_is_checked_by_the_config_and_against_the_data_before_ray(tmp_path, shakespeare):
    assert RunSpec.build(None).train.max_tokens is None  # batches of batch_size sequences, as before
    assert RunSpec.build(None, ["train.max_tokens=400"]).train.max_tokens == 400
    with pytest.raises(SeqlvmError, match=r"^overrides: train.max_tokens: 0 is not a positive integer$"):
        RunSpec.build(None, ["train.max_tokens=0"])
    with pytest.raises(SeqlvmError, match=r"^overrides: train.max_tokens must be at least 2 \(one word and its "
                                          r"</s>\), not 1$"):
        RunSpec.build(None, ["train.max_tokens=1"])
    from seqlvm.training import TrainRequest, prepare_run
    # the fixture keeps sentences of up to 30 words: 31 steps padded
    with pytest.raises(SeqlvmError) as refused:
        prepare_run(TrainRequest(data_dir=str(shakespeare), overrides=["train.max_tokens=30"]))
    assert str(refused.value) == ("train.max_tokens=30 is smaller than the longest training sequence (31 steps "
                                  "padded); raise it to at least 31")
    _, spec = prepare_run(TrainRequest(data_dir=str(shakespeare), overrides=["train.max_tokens=31"]))
    assert spec.train.max_tokens == 31
