"""The documentation against the code: README.md and docs/*.md.

Fast (no Ray, no MLflow): every `seqlvm` command shown must parse with the real parser, every `make TARGET`
must be a Makefile target, every relative link must point to a file (and an `#anchor` to a heading), and the
README stays short.

Which lines are commands: a line that starts with `seqlvm ` or `$ seqlvm ` anywhere, and a `seqlvm` line in a
```bash / sh / shell / console block; trailing-backslash continuations are joined and `#` comments dropped.
`seqlvm submit ... -- seqlvm COMMAND ...` is parsed as two commands.

Placeholders: UPPERCASE words (DIR, NAME, FILE, URL, ID...) are valid strings and stay as they are; the
numeric ones in NUMERIC_PLACEHOLDERS are replaced by a number before parsing.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

from seqlvm.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200
MAX_README_LINE_LENGTH = 120
# Placeholders that stand for numbers (argparse checks their type), and what they become.
NUMERIC_PLACEHOLDERS = {"N": "2", "K": "1", "STEPS": "100", "VERSION": "1", "T": "0.8", "PORT": "8265"}

FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
SHELL_LANGS = {"bash", "sh", "shell", "console"}


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def markdown_lines(path: Path):
    """(line number, text, fence language or None outside code blocks) for each line of a page."""
    fence, lang = None, None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line)
        if match and (fence is None or match.group(1).startswith(fence)):
            if fence is None:
                fence, lang = match.group(1)[0] * 3, match.group(2).lower()
            else:
                fence, lang = None, None
            continue
        yield number, line, lang if fence else None


def command_lines(path: Path):
    """(line number, command text) for every seqlvm command shown on a page, continuations joined."""
    pending, start = None, 0
    for number, line, lang in markdown_lines(path):
        if pending is not None:
            pending += " " + line.strip()
        else:
            text = line.strip()
            text = text[2:] if text.startswith("$ ") else text
            in_shell = lang in SHELL_LANGS
            if not text.startswith("seqlvm ") or not (in_shell or lang is None):
                continue
            if lang is None and not (line.startswith("seqlvm ") or line.startswith("$ seqlvm ")):
                continue  # indented prose
            pending, start = text, number
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        yield start, pending
        pending = None
    if pending is not None:
        yield start, pending


def argv_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    assert words[0] == "seqlvm", command
    return [NUMERIC_PLACEHOLDERS.get(word, word) for word in words[1:]]


def subparser_for(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, int]:
    """The (sub)parser that reads the flags of argv, and the index of the first word after its name."""
    index = 0
    while True:
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers or index >= len(argv) or argv[index] not in subparsers[0].choices:
            return parser, index
        parser, index = subparsers[0].choices[argv[index]], index + 1


def parse_error(argv: list[str]) -> str | None:
    """None if argv parses with the real parser and spells every flag in full, else the reason."""
    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exit_:
        lines = stderr.getvalue().strip().splitlines()  # argparse prints the usage, then `prog: error: ...`
        return (lines[-1] if lines else "") or f"exit {exit_.code}"
    # argparse accepts unambiguous prefixes (--num-sample for --num-samples): the docs must not rely on that.
    sub, index = subparser_for(parser, argv)
    known = sub._option_string_actions
    for word in argv[index:]:
        if word == "--":
            break
        flag = word.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            return f"{flag}: not a flag of `{sub.prog}` (only a prefix of one)"
    return None


def all_commands():
    for path in PAGES:
        for number, command in command_lines(path):
            yield path, number, command


def test_docs_show_commands():
    found = list(all_commands())
    assert len(found) >= 40, f"only {len(found)} seqlvm commands found in README.md and docs/"
    assert {rel(p) for p, _, _ in found} >= {"README.md", "docs/commands.md"}


def test_every_seqlvm_command_parses():
    failures = []
    count = 0
    for path, number, command in all_commands():
        try:
            argv = argv_of(command)
        except ValueError as error:  # unbalanced quotes
            failures.append(f"{rel(path)}:{number}: {command}\n    shlex: {error}")
            continue
        parts = [argv]
        if argv[:1] == ["submit"] and "--" in argv:
            cut = argv.index("--")
            inner = argv[cut + 1:]
            if inner[:1] != ["seqlvm"]:
                failures.append(f"{rel(path)}:{number}: {command}\n    the part after `--` must be a seqlvm command")
                continue
            parts = [argv[:cut], inner[1:]]
        for part in parts:
            count += 1
            error = parse_error(part)
            if error:
                failures.append(f"{rel(path)}:{number}: {command}\n    {error}")
    assert count
    assert not failures, "commands in the docs that the parser refuses:\n" + "\n".join(failures)


def makefile_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-$()/ ]+?)\s*::?(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


def code_texts(path: Path):
    """(line number, code) for inline code spans and code-block lines of a page."""
    for number, line, lang in markdown_lines(path):
        if lang is not None:
            yield number, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield number, span


def test_make_targets_exist():
    targets = makefile_targets()
    assert {"demo", "test"} <= targets
    shown, missing = 0, []
    for path in PAGES:
        for number, code in code_texts(path):
            for match in re.finditer(r"(?:^|[\s;&|(])make((?:\s+[^\s;&|#`]+)*)", code):
                words = [w for w in match.group(1).split() if "=" not in w and not w.startswith("-")]
                for target in words:  # a bare `make` runs the default target
                    shown += 1
                    if target not in targets:
                        missing.append(f"{rel(path)}:{number}: make {target}")
    assert shown
    assert not missing, f"not targets of the Makefile ({sorted(targets)}):\n" + "\n".join(missing)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for _, line, lang in markdown_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if lang is None and match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_relative_links_point_to_files():
    broken = []
    for path in PAGES:
        for number, line, lang in markdown_lines(path):
            if lang is not None:
                continue
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", re.sub(r"`[^`]*`", "", line)):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                if not linked.exists():
                    broken.append(f"{rel(path)}:{number}: {target} (no such file)")
                    continue
                if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{rel(path)}:{number}: {target} (no heading #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    long = [f"README.md:{n}: {len(line)} characters" for n, line in enumerate(lines, 1)
            if len(line) > MAX_README_LINE_LENGTH]
    assert not long, "\n".join(long)


def test_readme_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    pages = {rel(p) for p in PAGES[1:]}
    missing = [page for page in sorted(pages) if f"]({page})" not in text]
    assert not missing, f"README.md's 'Where to go next' does not link {missing}"
