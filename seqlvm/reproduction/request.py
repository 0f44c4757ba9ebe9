"""What a reproduction is asked to do (`ReproduceRequest`), checked before Ray starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import SeqlvmError
from seqlvm.reproduction.table import BUDGETS


@dataclass(frozen=True)
class ReproduceRequest:
    """The tables to regenerate (every one when empty), at which budget, on which data, where.
    - `data_root`: a folder with the papers' original files (the Boulanger-Lewandowski pickles...), or None.
    - `address`: a Ray cluster to run the rows on; else a local Ray with `cpus` CPUs (default: the machine's cores),
      one row a CPU at once.
    - `out`: the tables (Markdown, CSV), the prepared data and Tune's state; on a cluster of several nodes a
      folder every node shares.
    - `results_page`: a Markdown page whose generated block is replaced by this run's tables."""
    tables: tuple[str, ...] = ()
    budget: str = "quick"
    data_root: str | None = None
    address: str | None = None
    cpus: int | None = None
    out: str = "runs/reproduce"
    tracking_uri: str | None = None
    experiment: str = "reproduce"
    results_page: str | None = None
    quiet: bool = True

    def check(self, known: list[str]) -> None:
        for table in self.tables:
            if table not in known:
                raise SeqlvmError(f"{table}: no such table (known: {', '.join(known)})")
        if self.budget not in BUDGETS:
            raise SeqlvmError(f"--budget {self.budget}: choose one of {', '.join(BUDGETS)}")
        if self.data_root is not None and not Path(self.data_root).is_dir():
            raise SeqlvmError(f"--data-root {self.data_root}: not a folder")
        if self.cpus is not None and self.cpus < 1:
            raise SeqlvmError(f"--cpus {self.cpus}: give at least 1")
        if self.results_page is not None and not Path(self.results_page).is_file():
            raise SeqlvmError(f"--results-page {self.results_page}: no such file")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise SeqlvmError(f"--out {self.out}: exists and is not a folder")
