"""Search spaces, the sweep objective and the choice of the best trial: pure functions, no Ray."""
from __future__ import annotations

import json

import optuna
import pytest

from pipelines.errors import SeqlvmError
from seqlvm.evaluation import COLLAPSE_PENALTY, CollapseGuard
from seqlvm.models import MODELS
from seqlvm.training.spec import RunSpec
from tune.request import SweepRequest
from tune.search import make_sampler
from tune.space import SpaceSampler, default_space, leaving_alone, parse_space
from tune.summary import best_row
from tune.sweep import (DEFAULT_MIN_DECODE_DISTINCT, DEFAULT_MIN_DECODE_F1_GAIN, DEFAULT_MIN_KL,
                        DEFAULT_MIN_MUTUAL_INFO, SEARCHES, default_guard, sweep_space)

SPACE = {
    "train.kl_anneal": {"choice": ["sigmoid", "linear"]},
    "train.kl_anneal_rate": {"loguniform": [0.001, 0.1], "when": {"train.kl_anneal": "sigmoid"}},
    "train.kl_warmup_steps": {"int": [10, 100], "when": {"train.kl_anneal": "linear"}},
    "model.latent_dim": {"int": [4, 64], "log": True},
    "model.z_every_step": True,
}



def spec_of(model: str, max_steps: int) -> RunSpec:
    return RunSpec.build(None, [f"train.max_steps={max_steps}"], model)

def sample(space: dict, n: int, seed: int = 0) -> list[dict]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sampler = SpaceSampler(parse_space(space, "test.yaml"))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(sampler.propose(trial))
        study.tell(trial, 0.0)
    return out


def test_conditional_dimensions_appear_only_under_their_condition():
    points = sample(SPACE, 40)
    assert {p["train.kl_anneal"] for p in points} == {"sigmoid", "linear"}
    for p in points:
        assert ("train.kl_anneal_rate" in p) == (p["train.kl_anneal"] == "sigmoid")
        assert ("train.kl_warmup_steps" in p) == (p["train.kl_anneal"] == "linear")
        assert 4 <= p["model.latent_dim"] <= 64 and isinstance(p["model.latent_dim"], int)
        assert p["model.z_every_step"] is True


def test_sampled_values_set_the_spec_with_the_right_types():
    point = {"train.lr": 1e-05, "model.average_hidden": True, "train.kl_anneal": "linear", "model.latent_dim": 7}
    run = RunSpec.build().with_values(point)
    assert run.train.lr == 1e-05 and run.train.kl_anneal == "linear"
    assert run.model.average_hidden is True and run.model.latent_dim == 7


@pytest.mark.parametrize("spec, problem", [
    ({"model.latent_dim": {"int": [8, 4]}}, "low < high"),
    ({"model.latent_dim": {"int": [8, 16], "choice": [1]}}, "exactly one of"),
    ({"train.lr": {"loguniform": [0.0, 1.0]}}, "low > 0"),
    ({"train.lr": {"uniform": "fast"}}, "[low, high]"),
    ({"train.kl_anneal_rate": {"uniform": [0.1, 1], "when": {"train.kl_anneal": "sigmoid"}}}, "listed before"),
])
def test_bad_space_entries_are_one_line_errors_naming_the_file(spec, problem):
    with pytest.raises(SeqlvmError, match="test.yaml") as error:
        parse_space(spec, "test.yaml")
    assert problem in str(error.value)


def test_space_keys_are_checked_against_the_model_config(tmp_path):
    config = tmp_path / "sweep.yaml"
    config.write_text("train: {max_steps: 10}\ntune:\n  space:\n    model.no_such_key: {uniform: [0, 1]}\n")
    with pytest.raises(SeqlvmError, match="tune.space.model.no_such_key"):
        sweep_space(SweepRequest(data_dir="unused", config_file=str(config)), spec_of("sentence-vae", 10))
    config.write_text("tune:\n  spaec: {}\n")
    with pytest.raises(SeqlvmError, match="unknown key tune.spaec"):
        sweep_space(SweepRequest(data_dir="unused", config_file=str(config)), spec_of("sentence-vae", 10))


def test_default_space_fits_each_model_and_scales_with_training_length():
    vae_fields = {"latent_dim", "word_keep_rate", "latent_samples", "average_hidden", "hidden_dim",
                  "embedding_dim", "embedding_dropout", "hidden_dropout"}
    names = {d.name for d in default_space(vae_fields, 1000)}
    assert {"train.kl_anneal", "train.kl_anneal_rate", "model.word_keep_rate", "model.latent_samples",
            "model.average_hidden", "model.latent_dim", "model.hidden_dim"} <= names
    lm = {d.name for d in default_space({"hidden_dim", "embedding_dim"}, 1000)}
    assert "model.latent_dim" not in lm and "model.hidden_dim" in lm
    short, long = ({d.name: d for d in default_space(vae_fields, n)} for n in (100, 10_000))
    assert long["train.kl_anneal_midpoint"].high == 100 * short["train.kl_anneal_midpoint"].high
    for model in MODELS:  # every default is a valid key and value
        dims, guard = sweep_space(SweepRequest(data_dir="unused"), spec_of(model, 500))
        assert dims and guard == default_guard(MODELS[model])
    srnn = {d.name for d in sweep_space(SweepRequest(data_dir="unused"), spec_of("srnn", 500))[0]}
    assert {"model.smoothing", "model.resq", "train.kl_anneal"} <= srnn and "model.conditional_prior" not in srnn
    rnn = {d.name for d in sweep_space(SweepRequest(data_dir="unused"), spec_of("rnn", 500))[0]}
    assert not any("kl_" in name for name in rnn), "a model without a latent has nothing to anneal"


class TestJudgedByDecodes:
    """The guard on a sentence latent: decodes that are alike, or no closer to their input than to another's, mean
    z is unused, whatever its mutual information (the champion of issue 21's report, and the latent_use ablation)."""
    guard = CollapseGuard(min_mutual_info=0.5, min_active_units=1, min_decode_distinct=0.3, min_decode_f1_gain=0.05)

    def test_a_latent_whose_decodes_are_alike_is_unused_though_its_mutual_information_is_high(self):
        reported = {"mutual_info": 1.15, "active_units": 16, "decode_distinct": 0.008, "decode_f1": 0.049,
                    "decode_f1_shuffled": 0.049, "decode_f1_gain": 0.0}
        assert "0.8% distinct < 30%" in self.guard.collapse(reported)
        assert CollapseGuard(min_mutual_info=0.5, min_active_units=1).collapse(reported) is None  # the old rule

    def test_distinct_decodes_that_do_not_follow_their_input_are_unused(self):
        reported = {"mutual_info": 4.09, "active_units": 16, "decode_distinct": 0.34, "decode_f1_gain": -0.004}
        assert "no closer to their own input" in self.guard.collapse(reported)

    def test_a_used_latent_passes_and_versions_without_a_measured_gain_are_judged_from_their_f1s(self):
        used = {"mutual_info": 6.36, "active_units": 16, "decode_distinct": 0.90, "decode_f1": 0.352,
                "decode_f1_shuffled": 0.132}
        assert self.guard.collapse(used) is None
        assert "F1 gain 0.000" in self.guard.collapse({**used, "decode_f1_shuffled": 0.352})
        assert self.guard.objective(90.0, {**used, "decode_distinct": 0.01}) == 90.0 + COLLAPSE_PENALTY


def test_the_default_space_starts_from_the_models_recipe_and_leaves_alone_what_the_user_set(tmp_path):
    request = SweepRequest(data_dir="unused")
    dims = {d.name: d for d in sweep_space(request, spec_of("sentence-vae", 400))[0]}
    assert dims["model.z_every_step"].choices == [True] and dims["model.bow_weight"].choices == [1.0]
    assert dims["train.kl_anneal"].choices == ["cyclical"] and dims["train.kl_cycle_steps"].choices == [200]
    assert dims["model.free_bits"].kind == "uniform" and dims["model.free_bits"].low > 0
    config = tmp_path / "mine.yaml"
    config.write_text("model: {z_every_step: false}\n")
    spec = RunSpec.build(str(config), ["train.max_steps=400", "model.free_bits=0.2"])
    mine = {d.name for d in sweep_space(SweepRequest(data_dir="unused", config_file=str(config),
                                                     overrides=["model.free_bits=0.2"]), spec)[0]}
    assert "model.z_every_step" not in mine and "model.free_bits" not in mine and "train.lr" in mine
    assert {d.name for d in sweep_space(request, spec_of("vrnn", 400))[0]} >= {"model.conditional_prior"}
    hybrid = {d.name: d for d in sweep_space(request, spec_of("hybrid-vae", 300))[0]}
    assert hybrid["train.kl_anneal"].choices == ["linear"] and hybrid["train.kl_warmup_steps"].choices == [100]
    assert (hybrid["model.aux_weight"].low, hybrid["model.aux_weight"].high) == (0.1, 0.5)
    recipes = {name for name, cls in MODELS.items() if cls.sweep_recipe(400) is not None}
    assert recipes == {"sentence-vae", "hybrid-vae"}  # the others: the generic space


def test_a_dimension_conditional_on_a_value_the_user_set_follows_that_value():
    dims = parse_space(SPACE, "test.yaml")
    sigmoid = {d.name: d for d in leaving_alone(dims, {"train.kl_anneal": "sigmoid"})}
    assert "train.kl_anneal" not in sigmoid and "train.kl_warmup_steps" not in sigmoid
    assert sigmoid["train.kl_anneal_rate"].when == {}  # always active now
    assert {d.name for d in leaving_alone(dims, {"model.latent_dim": 8})} == set(SPACE) - {"model.latent_dim"}


def test_a_collapsed_model_cannot_win():
    guard = CollapseGuard(min_kl=1.0)
    collapsed = guard.objective(70.0, {"kl": 0.01})
    useful = guard.objective(90.0, {"kl": 3.0})
    assert collapsed == 70.0 + COLLAPSE_PENALTY and useful == 90.0 and useful < collapsed
    assert CollapseGuard().objective(70.0, {"kl": 0.0}) == 70.0  # no minimum: the plain bound
    rows = [{"trial": "a", "objective": collapsed, "checkpoint_path": "/a"},
            {"trial": "b", "objective": useful, "checkpoint_path": "/b"},
            {"trial": "c", "objective": 50.0, "checkpoint_path": None},  # errored before a checkpoint
            {"trial": "d", "objective": None, "checkpoint_path": "/d"}]
    assert best_row(rows)["trial"] == "b"
    assert best_row(rows[2:]) is None


@pytest.mark.parametrize("search", SEARCHES)
def test_each_search_proposes_valid_configurations_past_its_random_start(search):
    # Past the start-up trials TPE and GP fit a model to the results; they must cope with the conditional,
    # integer and categorical dimensions of the space.
    study = optuna.create_study(sampler=make_sampler(search, seed=0, startup_trials=2))
    propose = SpaceSampler(parse_space(SPACE, "test.yaml"))
    seen = []
    for i in range(5):
        trial = study.ask()
        params = propose.propose(trial)
        RunSpec.build().with_values(params)
        study.tell(trial, float(params["model.latent_dim"]))  # an objective the model can learn
        seen.append(params)
    assert len({json.dumps(p, sort_keys=True) for p in seen}) == 5


class TestCollapseGuardOfASweep:
    def guard(self, model="sentence-vae", config=None, **request):
        return sweep_space(SweepRequest(data_dir="unused", config_file=config, **request), spec_of(model, 500))[1]

    def test_latent_models_are_guarded_by_default(self):
        assert self.guard() == CollapseGuard(min_mutual_info=DEFAULT_MIN_MUTUAL_INFO, min_active_units=1,
                                             min_decode_distinct=DEFAULT_MIN_DECODE_DISTINCT,
                                             min_decode_f1_gain=DEFAULT_MIN_DECODE_F1_GAIN)
        assert self.guard("hybrid-vae") == self.guard()  # every sentence latent is judged by its decodes
        assert self.guard("nvdm") == CollapseGuard(min_mutual_info=DEFAULT_MIN_MUTUAL_INFO, min_active_units=1)
        characters = sweep_space(SweepRequest(data_dir="unused"), spec_of("hybrid-vae", 500), words=False)[1]
        assert characters == self.guard("nvdm")  # a unigram F1 of characters tells nothing
        assert self.guard("vrnn") == CollapseGuard(min_kl=DEFAULT_MIN_KL)  # latents per step: their KL
        assert self.guard("rnnlm") == CollapseGuard()  # nothing to collapse

    def test_the_command_line_beats_the_config_which_beats_the_default(self, tmp_path):
        config = tmp_path / "sweep.yaml"
        config.write_text("tune:\n  min_mutual_info: 2.0\n  min_kl: 0.3\n")
        decodes = (DEFAULT_MIN_DECODE_DISTINCT, DEFAULT_MIN_DECODE_F1_GAIN)
        assert self.guard(config=str(config)) == CollapseGuard(0.3, 2.0, 1, *decodes)
        assert self.guard(config=str(config), min_mutual_info=1.0) == CollapseGuard(0.3, 1.0, 1, *decodes)
        assert self.guard(min_decode_distinct=0.6, min_decode_f1_gain=0.0) == CollapseGuard(
            0.0, DEFAULT_MIN_MUTUAL_INFO, 1, 0.6, 0.0)
        assert self.guard(config=str(config), allow_collapsed=True) == CollapseGuard()

    @pytest.mark.parametrize("text", ["tune:\n  min_kl: -1\n", "tune:\n  min_active_units: lots\n",
                                      "tune:\n  min_mutual_info: true\n", "tune:\n  min_entropy: 1\n"])
    def test_a_bad_minimum_is_refused_in_one_line(self, tmp_path, text):
        config = tmp_path / "sweep.yaml"
        config.write_text(text)
        with pytest.raises(SeqlvmError, match=r"sweep.yaml: .*tune\.min_"):
            self.guard(config=str(config))
