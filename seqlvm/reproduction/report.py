"""A reproduced table as a person reads it (Markdown) and as a program does (CSV), and the generated block of a
results page that holds the last full run's tables."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from seqlvm.reproduction.table import Check, PaperTable, RowOutcome
from seqlvm.run_log import duration

BEGIN = "<!-- seqlvm reproduce: begin (generated; do not edit by hand) -->"
END = "<!-- seqlvm reproduce: end -->"
FINGERPRINT_SHOWN = 12  # hex digits of a data fingerprint the Markdown shows; the CSV has them all
CSV_COLUMNS = ("table", "row", "label", "metric", "ours", "paper", "comparable", "basis", "data", "fingerprint",
               "budget", "steps", "wall_s", "failure")


@dataclass(frozen=True)
class TableResult:
    """One table's rows as they ran and its paper's trends as checked."""
    table: PaperTable
    budget: str
    outcomes: tuple[RowOutcome, ...]
    checks: tuple[Check, ...]

    def records(self) -> list[dict]:
        """One record a line (a failed row: one record with its failure), in CSV_COLUMNS."""
        found = []
        for outcome in self.outcomes:
            data = outcome.row.data
            shared = {"table": self.table.key, "row": outcome.row.name, "data": data.name if data else "",
                      "fingerprint": data.fingerprint if data else "", "budget": self.budget,
                      "steps": outcome.steps, "wall_s": round(outcome.seconds, 1), "failure": outcome.failure or ""}
            if outcome.failure:
                found.append({**shared, "label": outcome.row.name, "metric": "", "ours": None, "paper": None,
                              "comparable": False, "basis": ""})
            found.extend({**shared, "label": line.label, "metric": line.metric, "ours": line.ours,
                          "paper": line.paper, "comparable": line.comparable, "basis": line.basis}
                         for line in outcome.lines)
        return found

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records())
        return buffer.getvalue()

    def markdown(self) -> str:
        """The table, its bases as footnotes (numbered once each), the data read, and the checked trends."""
        bases: list[str] = []
        lines = [f"### {self.table.paper}: {self.table.title}", "",
                 f"Budget `{self.budget}`. Comparable: the same data files and metric as the paper; otherwise the "
                 "row only indicates.", "",
                 "| row | metric | ours | paper | comparable | steps | wall |", "|---|---|---:|---:|---|---:|---:|"]
        for record in self.records():
            if record["failure"]:
                lines.append(f"| {record['label']} | failed: {record['failure']} | | | | {record['steps']} | "
                             f"{duration(record['wall_s'])} |")
                continue
            if record["basis"] not in bases:
                bases.append(record["basis"])
            flag = f"{'yes' if record['comparable'] else 'no'} [{bases.index(record['basis']) + 1}]"
            lines.append(f"| {record['label']} | {record['metric']} | {number(record['ours'])} | "
                         f"{number(record['paper'])} | {flag} | {record['steps']} | {duration(record['wall_s'])} |")
        lines.append("")
        lines.extend(f"- [{i}] {basis}" for i, basis in enumerate(bases, 1))
        data = {(o.row.data.name, o.row.data.fingerprint) for o in self.outcomes if o.row.data}
        lines += ["", "Data (fingerprints in the CSV): " + "; ".join(
            f"{name} (`{fingerprint[:FINGERPRINT_SHOWN]}`)" for name, fingerprint in sorted(data)), ""]
        lines.extend(f"- {'holds' if check.holds else 'does NOT hold'}: {check.claim} ({check.detail})"
                     for check in self.checks)
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> list[Path]:
        written = []
        for suffix, text in (("md", self.markdown()), ("csv", self.csv())):
            path = folder / f"{self.table.key}.{suffix}"
            staged = path.with_suffix(path.suffix + ".partial")
            staged.write_text(text)
            staged.replace(path)
            written.append(path)
        return written


def number(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"


def results_block(results: list[TableResult], heading: str) -> str:
    return "\n".join([BEGIN, heading, "", *(result.markdown() for result in results), END])


def update_page(page: Path, block: str) -> None:
    """Replace the generated block of `page` (or append one when it has none), written whole or not at all."""
    text = page.read_text()
    if BEGIN in text and END in text:
        before, _, rest = text.partition(BEGIN)
        text = before + block + rest.partition(END)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    staged = page.with_suffix(page.suffix + ".partial")
    staged.write_text(text)
    staged.replace(page)
