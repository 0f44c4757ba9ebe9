"""What a person sees of a run or sweep: the process's output diverted into the run's log file (a real child
process, real file descriptors), workers' progress lines picked out of Ray's stream, the trials table fitted to
100 columns, the progress line of a trial. No Ray: the sweep on Ray that checks the whole console is in
test_e2e_tune.py."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

from rich.console import Console

from seqlvm import run_log
from seqlvm.cli.output import TABLE_WIDTH
from seqlvm.cli.sweep import trials_table
from seqlvm.evaluation import CollapseGuard
from tune.progress import evaluation_line


def test_a_diverted_process_writes_only_seqlvms_lines_to_the_terminal(tmp_path):
    """Python's prints, a library's logging, native writes to fds 1 and 2 and a child process's output all go to
    the log file; `tell` and the command line's consoles still reach the terminal."""
    log = tmp_path / "run" / "sweep.log"
    script = textwrap.dedent(f"""
        import logging, os, subprocess, sys
        from pathlib import Path
        from seqlvm import run_log
        from seqlvm.cli.output import console, out
        print("before")
        run_log.divert(Path({str(log)!r}))
        print("a print")
        logging.getLogger("ray").warning("a library's warning")
        os.write(1, b"native stdout\\n")
        os.write(2, b"native stderr\\n")
        subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
        run_log.tell("ours, to stderr")
        console.print("a console message")
        out.print("a table line")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["before", "a table line"]
    assert done.stderr.splitlines() == ["ours, to stderr", "a console message"]
    written = log.read_text()
    for line in ("a print", "a library's warning", "native stdout", "native stderr", "a child process"):
        assert line in written
    assert "ours" not in written and "a table line" not in written


def test_restore_gives_the_terminal_back(tmp_path, capfd):
    run_log.divert(tmp_path / "x.log")
    try:
        os.write(1, b"hidden\n")
    finally:
        run_log.restore()
    os.write(1, b"shown\n")
    captured = capfd.readouterr().out
    assert "shown" in captured and "hidden" not in captured
    assert "hidden" in (tmp_path / "x.log").read_text()


def test_only_marked_worker_lines_are_echoed(capsys):
    """Ray hands the driver each batch of a worker's output; seqlvm's progress lines carry a mark, the rest (Train's
    reports, Ray's notices) do not."""
    run_log._echo_progress({"lines": [f"{run_log.PROGRESS_MARK}step 10 | nll bound 99.1",
                                      "Reporting training result 1: TrainingReport(checkpoint=None)",
                                      "worker rank 0 of 1: pid 7"], "pid": 7, "is_err": False})
    assert capsys.readouterr().err == "step 10 | nll bound 99.1\n"


def test_duration_reads_as_a_person_says_it():
    assert [run_log.duration(s) for s in (4.4, 75, 3600 * 2 + 300)] == ["4s", "1m15s", "2h05m"]


def rows(n: int, varied: dict[str, list]) -> list[dict]:
    return [{"trial": f"8f9e1a2b_{i:05d}", "outcome": "stopped early", "step": 200, "objective": 95.0 + i,
             "valid_nll_bound": 95.0 + i, "valid_kl": 12.1, "valid_mutual_info": 3.2, "valid_decode_distinct": 0.64,
             "collapsed": False, "params": {"train.kl_anneal": "cyclical", **{k: v[i] for k, v in varied.items()}}}
            for i in range(n)]


def rendered(table) -> list[str]:
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(table)
    return buffer.getvalue().splitlines()


def test_the_trials_table_shows_what_varied_and_fits_100_columns():
    varied = {"model.free_bits": [1.0 + i / 10 for i in range(12)], "train.lr": [0.003 + i / 1e4 for i in range(12)],
              "model.word_keep_rate": [0.1 + i / 100 for i in range(12)],
              "model.latent_dim": [16 + i for i in range(12)]}
    for n in (2, 12):
        sweep_rows = rows(n, {k: v[:n] for k, v in varied.items()})
        lines = rendered(trials_table(SimpleNamespace(name="s", rows=sweep_rows, best=sweep_rows[0])))
        text = "\n".join(lines)
        assert max(len(line) for line in lines) <= TABLE_WIDTH, text
        assert "free_bits" in text and "word_keep_rate" in text and "kl_anneal" not in text  # what every trial shared
        assert all(row["trial"] in text for row in sweep_rows) and "8f9e1a2b_00000*" in text


def test_a_trials_progress_line_says_why_the_guard_rejects_it():
    guard = CollapseGuard(min_mutual_info=0.5, min_decode_distinct=0.3)
    result = {"step": 200, "objective": 1095.21, "valid/nll_bound": 95.21, "valid/kl": 12.1,
              "valid/mutual_info": 2.04, "valid/decode_distinct": 0.021}
    line = evaluation_line(result, guard, 400)
    assert line.startswith("step 200/400 | bound 95.21 + 1000, rejected | KL 12.10 | MI 2.04 | decodes 2% distinct")
    assert line.endswith("nearly all alike: 2.1% distinct < 30%")
    accepted = evaluation_line({**result, "objective": 95.21, "valid/decode_distinct": 0.64}, guard, 400)
    assert accepted == "step 200/400 | objective 95.21 | KL 12.10 | MI 2.04 | decodes 64% distinct"
