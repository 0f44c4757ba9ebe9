"""Property-based tests (Hypothesis) of the run configuration: any combination of keys and values, as overrides or
as a config file, either builds a configuration the model trains with (one forward and backward pass on real
data) or is refused with a one-line SeqlvmError; never another exception."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.dataset import PreparedDataset
from pipelines.errors import SeqlvmError
from seqlvm.models.sentence_vae import SentenceVAEConfig
from seqlvm.training.request import try_one_step
from seqlvm.training.spec import RunSpec, TrainConfig

DATA = PreparedDataset.open(Path(__file__).parent / "fixtures" / "datasets" / "tiny-text")
KEYS = ([f"model.{f.name}" for f in dataclasses.fields(SentenceVAEConfig)]
        + [f"train.{f.name}" for f in dataclasses.fields(TrainConfig)]
        + ["model.nosuch", "optim.lr", "lr", "hidden_dim", "model", ".x", "model.", "train.lr.x"])
# Sizes stay small so a configuration that is accepted trains in milliseconds.
VALUES = st.one_of(st.integers(-3, 24), st.floats(-2.0, 2.0), st.sampled_from([float("nan"), float("inf"), 1e-3]),
                   st.booleans(), st.none(), st.sampled_from(["sigmoid", "cyclical", "adam", "bf16", "none", "x"]),
                   st.text(max_size=8))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_trains_or_is_refused_in_one_line(build) -> None:
    """Any other exception fails the test: it propagates."""
    try:
        spec = build()
        try_one_step(spec, DATA)
    except SeqlvmError as exc:
        assert str(exc) and "\n" not in str(exc)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=5))
def test_any_overrides_build_a_runnable_config_or_are_refused_in_one_line(pairs):
    overrides = [f"{key}={value}" for key, value in pairs]
    assert_trains_or_is_refused_in_one_line(lambda: RunSpec.build(None, overrides, "sentence-vae"))


@SETTINGS
@given(st.text(max_size=20).filter(lambda s: "=" not in s))
def test_an_override_without_a_value_is_refused(item):
    with pytest.raises(SeqlvmError) as refused:
        RunSpec.build(None, [item], "sentence-vae")
    assert f"override {item!r} is not of the form key=value" == str(refused.value)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["model", "train", "tune", "model_name", "other"]),
                       st.one_of(st.dictionaries(st.sampled_from([k.split(".", 1)[-1] for k in KEYS]), VALUES,
                                                 max_size=4), VALUES), max_size=3))
def test_any_config_file_builds_a_runnable_config_or_is_refused_in_one_line(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("config") / "run.yaml"
    path.write_text(yaml.safe_dump(content))
    assert_trains_or_is_refused_in_one_line(lambda: RunSpec.build(path, [], None))
