"""The layers, read from the imports of every module of `pipelines/`, `seqlvm/` and `tune/` (module-level and
function-level alike, and modules named by `importlib.import_module("...")` or by a registry string such as
"pipelines.audio:render_audio"), against docs/architecture.md:

    seqlvm.cli        the command line: the only importer of tune, of the service (seqlvm.serving) and of the
                      reproductions (seqlvm.reproduction)
    tune, seqlvm.reproduction
                      sweeps and the papers' tables: training only through its package, `seqlvm.training`
    seqlvm.training   the driver and the workers: imported by nothing below it
    seqlvm (rest)     tracking and the registry, cluster operations, checkpoints, evaluation, generation
    seqlvm.models     models and maths (with seqlvm.objectives): nothing of seqlvm above them, no Ray, no MLflow
    pipelines         the ground floor: nothing of seqlvm or tune

and no two modules import each other, directly or through others."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "seqlvm", "tune")
MATHS = ("seqlvm.models", "seqlvm.objectives")
IMPORT_CALLS = ("importlib.import_module", "import_module", "__import__")


def module_files(root: Path = REPO) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Every module `module` imports: `import a.b` gives a.b; `from a import b` gives a, and a.b when that is a
    module; relative imports resolved; `importlib.import_module("a.b")` and `__import__("a.b")` give a.b, and so
    does a string "a.b:name" naming a known module (a registry entry loaded with importlib)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in IMPORT_CALLS and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.add(node.args[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value \
                and node.value.split(":", 1)[0] in known:
            found.add(node.value.split(":", 1)[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return found - {module}


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    files = module_files(root)
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            rule = None
            if within(module, "pipelines") and within(target, "seqlvm", "tune"):
                rule = "pipelines/ is the ground floor"
            elif within(module, *MATHS) and (within(target, "ray", "mlflow", "tune")
                                             or within(target, "seqlvm") and not within(target, *MATHS)):
                rule = "models and maths import nothing of training, tracking, Ray or MLflow"
            elif within(target, "tune") and not within(module, "tune", "seqlvm.cli"):
                rule = "only the command line imports tune"
            elif within(target, "seqlvm.cli") and not within(module, "seqlvm.cli"):
                rule = "nothing imports the command line"
            elif within(module, "tune", "seqlvm.reproduction") and within(target, "seqlvm.training") \
                    and target != "seqlvm.training":
                rule = "tune and the reproductions use training's public API, the seqlvm.training package"
            elif within(target, "seqlvm.reproduction") and not within(module, "seqlvm.reproduction", "seqlvm.cli"):
                rule = "only the command line imports the reproductions"
            elif within(target, "seqlvm.training") and not within(module, "seqlvm.training", "seqlvm.cli", "tune",
                                                                  "seqlvm.reproduction"):
                rule = "training is above tracking, cluster operations, checkpoints and evaluation"
            elif within(target, "seqlvm.serving") and not within(module, "seqlvm.serving", "seqlvm.cli"):
                rule = "only the command line imports the service"
            if rule:
                found.append(f"{module} imports {target}: {rule}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_every_import_goes_down_the_layers():
    assert layer_violations(import_graph()) == []


def test_no_modules_import_each_other():
    assert cycles(import_graph()) == []


def test_the_checks_catch_a_forbidden_import_and_a_cycle():
    graph = import_graph()
    for module, target in (("pipelines.stream", "seqlvm.models"), ("seqlvm.models.vrnn", "seqlvm.training"),
                           ("seqlvm.models.base", "mlflow"), ("seqlvm.training.driver", "tune.sweep"),
                           ("tune.sweep", "seqlvm.training.worker"), ("seqlvm.checkpoint", "seqlvm.training"),
                           ("seqlvm.training.driver", "seqlvm.cli.output"),
                           ("seqlvm.operations", "seqlvm.serving.service"),
                           ("seqlvm.reproduction.fit", "seqlvm.training.local"), ("tune.sweep", "seqlvm.reproduction")):
        assert module in graph, module
        broken = {**graph, module: graph[module] | {target}}
        assert [v for v in layer_violations(broken) if v.startswith(f"{module} imports {target}:")], (module, target)
    looped = {**graph, "pipelines.errors": graph["pipelines.errors"] | {"pipelines.dataset"}}
    assert any("pipelines.errors" in group for group in cycles(looped))


# A package tree with every form of import the reader must see: relative ones (one and two levels up), imports inside
# functions, `from PACKAGE import MODULE`, importlib with a literal name, and a registry string.
PLANTED_TREE = {
    "pipelines/__init__.py": "",
    "pipelines/a.py": "from . import b\nfrom .b import thing\n\n\ndef late():\n    import seqlvm.training.driver\n",
    "pipelines/b.py": ("import importlib\n\nREGISTRY = {'plain': 'pipelines.c:render', 'not a module': 'x:y'}\n\n\n"
                       "def load():\n    return importlib.import_module('seqlvm.models')\n"),
    "pipelines/c.py": "",
    "pipelines/sub/__init__.py": "",
    "pipelines/sub/d.py": "from .. import a\nfrom ..b import load\n",
    "seqlvm/__init__.py": "",
    "seqlvm/models/__init__.py": "",
    "seqlvm/training/__init__.py": "",
    "seqlvm/training/driver.py": "",
    "seqlvm/report.py": "from seqlvm import training\n",
    "tune/__init__.py": "",
}


def test_the_reader_sees_every_form_of_import(tmp_path):
    for name, code in PLANTED_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    graph = import_graph(tmp_path)
    assert graph["pipelines.a"] == {"pipelines", "pipelines.b", "seqlvm.training.driver"}
    assert graph["pipelines.b"] == {"importlib", "pipelines.c", "seqlvm.models"}
    assert graph["pipelines.sub.d"] == {"pipelines", "pipelines.a", "pipelines.b"}
    assert graph["seqlvm.report"] == {"seqlvm", "seqlvm.training"}
    violations = layer_violations(graph)
    for module, target in (("pipelines.a", "seqlvm.training.driver"), ("pipelines.b", "seqlvm.models"),
                           ("seqlvm.report", "seqlvm.training")):
        assert [v for v in violations if v.startswith(f"{module} imports {target}:")], (module, target)
    assert len(violations) == 3, violations
