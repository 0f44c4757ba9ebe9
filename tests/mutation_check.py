"""Does the suite catch what it claims to? Each plant puts one fault into a fresh copy of the checkout and runs the
tests that guard against it there; a plant is caught when at least one of them fails.

    python tests/mutation_check.py           every plant (the sweep tests start Ray: about 6 minutes on 2 cores)
    python tests/mutation_check.py --fast    only the tests without Ray (what CI runs, in tests/test_mutation_check.py)

With --fast, as many plants are checked at once as the machine has CPUs (--jobs sets how many). Prints a table of
plants and the tests that caught them, and ends with `caught K of N`; exits 1 unless every plant was caught. A plant
whose text is no longer in the code stops the check: update the plant with the code."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Plant:
    name: str
    edits: list[tuple[str, str, str]]  # (file, text that must be there once, what replaces it)
    tests: list[str]  # pytest ids that run without Ray
    ray_tests: list[str] = field(default_factory=list)
    new_files: dict[str, str] = field(default_factory=dict)


REPLAY_FINISHED_TRIALS = '''    if resume and ray_tune.Tuner.can_restore(f"{storage}/{request.name}"):
        import glob
        for saved in glob.glob(f"{storage}/{request.name}/experiment_state-*.json"):
            state = json.loads(Path(saved).read_text())
            state["trial_data"] = [[json.dumps({**json.loads(entry[0]), "status": "PENDING"}), *entry[1:]]
                                   for entry in state["trial_data"]]
            Path(saved).write_text(json.dumps(state))
'''

UNUSED_Z_SWEEP = ("tests/test_e2e_tune.py::test_a_sweep_whose_decodes_ignore_z_crowns_no_champion_and_its_console_"
                  "is_seqlvms")

PLANTS = [
    Plant("the champion is the worst trial",
          [("tune/summary.py", 'return min(usable, key=lambda r: r["objective"])',
            'return max(usable, key=lambda r: r["objective"])')],
          ["tests/test_tracked_run.py::test_the_champion_is_the_scored_trial_with_the_best_objective"],
          ["tests/test_e2e_tune.py::test_best_trial_is_registered_as_champion_and_loads_through_mlflow"]),
    Plant("a resumed sweep runs its finished trials again",
          [("tune/sweep.py", '    if resume and ray_tune.Tuner.can_restore(f"{storage}/{request.name}"):\n',
            REPLAY_FINISHED_TRIALS)],
          [], ["tests/test_e2e_tune.py::test_resume_finishes_the_sweep_without_rerunning_finished_trials"]),
    Plant("a forbidden import inside a function, in a new package",
          [], ["tests/test_layers.py::test_every_import_goes_down_the_layers"],
          new_files={"pipelines/planted/__init__.py": "",
                     "pipelines/planted/late.py": "def load():\n    from seqlvm.training import driver\n"
                                                  "    return driver\n"}),
    Plant("the layer test's reader skips imports inside functions",
          [("tests/test_layers.py", "for node in ast.walk(ast.parse(path.read_text(), str(path))):",
            "for node in ast.parse(path.read_text(), str(path)).body:")],
          ["tests/test_layers.py::test_the_reader_sees_every_form_of_import"]),
    Plant("the old VRNN checkpoint's bound shifted (the per-step KL off by 0.001 nats a dimension)",
          [("seqlvm/objectives.py", "/ logvar_p.exp() - 1.0).sum(-1)", "/ logvar_p.exp() - 0.999).sum(-1)")],
          ["tests/test_compat.py::test_a_frame_checkpoint_written_before_loads_samples_and_evaluates_as_it_did"]),
    Plant("sizes are not validated (a negative hidden size reaches PyTorch)",
          [("seqlvm/models/fields.py", "    check_ranges(config, section)\n    if hasattr", "    if hasattr")],
          ["tests/test_config.py::test_a_value_outside_its_range_is_refused_naming_the_source_and_the_dotted_key",
           "tests/test_bad_input.py::test_bad_input_is_refused_in_one_line_and_changes_nothing"
           "[train: a negative hidden size]"]),
    Plant("a sweep's trials skip the delivery of their pending metrics",
          [("tune/summary.py", '        if row["checkpoint_path"]:\n            run.deliver_pending(',
            '        if False:\n            run.deliver_pending(')],
          ["tests/test_tracked_run.py::test_a_sweep_ends_each_trial_run_as_a_training_run_ends"],
          ["tests/test_e2e_tune.py::test_every_trials_metrics_arrive_once_after_the_tracking_server_was_down"]),
    Plant("a failed run loses its reason in MLflow",
          [("seqlvm/training/tracked_run.py", '**({FAILURE_TAG: failure[:5000]} if failure else {})', '')],
          ["tests/test_tracked_run.py::test_the_end_logs_curves_tags_and_the_status_with_its_reason"]),
    Plant("a step that failed on another worker loses its cause",
          [("seqlvm/training/step.py", "cause = explain(root_cause(error) if error is not None else None)",
            "cause = root_cause(error) if error is not None else None")],
          ["tests/test_train_step.py::TestTakeStep"]),
    Plant("the sigmoid schedule is steeper than Bowman's",
          [("seqlvm/objectives.py", "math.exp(min(700.0, -rate * (step - midpoint)))",
            "math.exp(min(700.0, -1.1 * rate * (step - midpoint)))")],
          ["tests/test_objectives.py::test_sigmoid_schedule_reproduces_bowman_figure_2"]),
    Plant("importance weights leave out log q(z | x)",
          [("seqlvm/models/sentence_vae.py", "log_ratio = log_normal(z) - log_normal(z, mu, logvar)",
            "log_ratio = log_normal(z)")],
          ["tests/test_models.py::test_importance_weights_average_to_the_elbo_and_their_bound_is_tighter"]),
    Plant("an override without a value is accepted",
          [("seqlvm/training/spec.py", '            if "=" not in item:\n',
            '            if "=" not in item and False:\n')],
          ["tests/test_config_properties.py::test_an_override_without_a_value_is_refused"]),
    Plant("the default guard ignores the decodes (the rule that crowned a latent it did not use)",
          [("tune/sweep.py", "                             min_decode_distinct=DEFAULT_MIN_DECODE_DISTINCT,\n"
                             "                             min_decode_f1_gain=DEFAULT_MIN_DECODE_F1_GAIN)", ")")],
          ["tests/test_tune_space.py::TestCollapseGuardOfASweep::test_latent_models_are_guarded_by_default"],
          [UNUSED_Z_SWEEP]),
    Plant("a check of the guard never fires",
          [("seqlvm/evaluation.py", "value is not None and value < getattr(self, minimum)",
            "value is not None and value < 0")],
          ["tests/test_tune_space.py::TestJudgedByDecodes"]),
    Plant("the default space searches what the user set",
          [("tune/sweep.py", "        dims = leaving_alone(dims, {key: spec.value(key) for key in chosen})\n", "")],
          ["tests/test_tune_space.py::test_the_default_space_starts_from_the_models_recipe_and_leaves_alone_what_"
           "the_user_set"]),
    Plant("Ray's output reaches the console (nothing diverted)",
          [("seqlvm/run_log.py", "        os.dup2(log, fd)\n", "        pass\n")],
          ["tests/test_console.py::test_a_diverted_process_writes_only_seqlvms_lines_to_the_terminal"],
          [UNUSED_Z_SWEEP]),
    Plant("the trials table keeps a row per trial however wide",
          [("seqlvm/cli/output.py", ") + 1 <= width:", ") + 1 <= 10 * width:")],
          ["tests/test_console.py::test_the_trials_table_shows_what_varied_and_fits_100_columns"]),
    Plant("a sentence is tokenised with the default options, not its corpus's",
          [("pipelines/description.py", "options = {**dataclasses.asdict(TextOptions()), **dataset.options}",
            "options = dataclasses.asdict(TextOptions())")],
          ["tests/test_data_description.py::test_the_description_holds_the_preparation_options_and_survives_plain_"
           "data", "tests/test_data_description.py::test_sample_reads_the_sentence_as_it_was_prepared",
           "tests/test_data_description.py::test_the_registered_model_encodes_as_preparation_did"],
          ["tests/test_data_description.py::test_the_service_encodes_as_preparation_did"]),
    Plant("a scored sequence's samples are seeded by its place in the batch, not by its row",
          [("seqlvm/scoring/scorer.py", "row_seed(self.seed, row))", "row_seed(self.seed, len(columns[ROW])))")],
          ["tests/test_score.py::test_rows_do_not_depend_on_batches_but_on_the_seed"],
          ["tests/test_score.py::test_one_and_two_replicas_give_the_rows_of_this_process"]),
    Plant("evaluate's importance-weighted NLL sums the ELBO column",
          [("seqlvm/scoring/job.py", 'log_likelihoods.extend(table["iw_ll"].to_pylist())',
            'log_likelihoods.extend(table["elbo"].to_pylist())')],
          ["tests/test_compat.py::test_a_text_checkpoint_written_before_loads_samples_and_evaluates_as_it_did"]),
    Plant("scores are written in the order the replicas finish",
          [("seqlvm/scoring/placement.py", "execution_options.preserve_order = True",
            "execution_options.preserve_order = False")],
          [], ["tests/test_score.py::test_one_and_two_replicas_give_the_rows_of_this_process"]),
    Plant("a failed scoring job leaves a half-written file",
          [("seqlvm/scoring/output.py", "    staging = f\"{path.rpartition('/')[0]}/.{path.rpartition('/')[2]}.tmp-"
                                        "{uuid.uuid4().hex[:12]}\"\n", "    staging = path\n")],
          ["tests/test_score.py::test_a_job_that_fails_leaves_the_output_as_it_was"]),
    Plant("no row on Boulanger-Lewandowski's pickles compares with the paper",
          [("seqlvm/reproduction/tables/music.py", "published, file_name in PICKLES and published is not None,",
            "published, False,")],
          ["tests/test_reproduce_music.py::test_on_boulanger_pickles_each_published_number_goes_on_its_kind_of_line"]),
    Plant("the results page loses its text after the generated block",
          [("seqlvm/reproduction/report.py", "text = before + block + rest.partition(END)[2]", "text = before + block")],
          ["tests/test_reproduce.py::test_the_results_page_block_is_replaced_or_appended"]),
    Plant("a test that skips in CI passes",
          [("tests/skip_policy.py", "    return (in_ci() and report.skipped", "    return (False and report.skipped")],
          ["tests/test_skip_policy.py::test_in_ci_a_skip_fails_with_its_reason"]),
]


def checkout_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def planted_copy(plant: Plant, files: list[str], root: Path) -> Path:
    copy = root / "checkout"
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    for name, old, new in plant.edits:
        text = (copy / name).read_text()
        if text.count(old) != 1:
            raise SystemExit(f"plant {plant.name!r}: {name} holds {text.count(old)} copies of {old!r}, not 1; "
                             "update the plant with the code")
        (copy / name).write_text(text.replace(old, new))
    for name, text in plant.new_files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)
    return copy


def failed_tests(copy: Path, tests: list[str]) -> list[str]:
    """The tests (of those given) that fail on the planted copy, which shadows the installed checkout."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(copy), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *tests],
                            cwd=copy, env=env, capture_output=True, text=True, timeout=1500)
    return sorted({re.sub(r"\[.*", "", line.split()[1]) for line in result.stdout.splitlines()
                   if line.startswith("FAILED ")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the tests that run without Ray")
    parser.add_argument("--jobs", type=int, help="plants checked at once (default: one per CPU with --fast, else 1: "
                                                 "each plant's sweeps start a Ray of their own)")
    args = parser.parse_args(argv)
    files = checkout_files()
    plants = [p for p in PLANTS if p.tests or not args.fast]

    def check(plant: Plant) -> tuple[str, list[str], list[str], float]:
        tests = plant.tests + ([] if args.fast else plant.ray_tests)
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="seqlvm-plant-") as root:
            failing = failed_tests(planted_copy(plant, files, Path(root)), tests)
        print(f"{'caught' if failing else 'MISSED'}: {plant.name} ({time.time() - started:.0f} s)", flush=True)
        return plant.name, tests, failing, time.time() - started

    # each plant's pytest is a process of its own, mostly importing: they share a machine's CPUs well
    with ThreadPoolExecutor(args.jobs or (os.cpu_count() if args.fast else 1)) as pool:
        rows = list(pool.map(check, plants))
    caught = sum(bool(failing) for _, _, failing, _ in rows)
    print()
    print_table(rows)
    print(f"caught {caught} of {len(plants)}")
    return 0 if caught == len(plants) else 1


def print_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="planted faults", show_lines=True)
    for column in ("planted fault", "caught by", "s"):
        table.add_column(column, justify="right" if column == "s" else "left", overflow="fold")
    for name, tests, failing, seconds in rows:
        caught_by = "\n".join(short(t) for t in failing) or f"NOTHING (ran {', '.join(short(t) for t in tests)})"
        table.add_row(name, caught_by, f"{seconds:.0f}")
    Console(width=140).print(table)


def short(test: str) -> str:
    return test.removeprefix("tests/")


if __name__ == "__main__":
    sys.exit(main())
