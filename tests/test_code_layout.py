"""The code's shape, checked on the source: layers import in one direction, modules and functions stay small
enough to read, ``jobs/`` stays a handful of stage packages, and every module says what it is.

Run: ``python -m pytest tests/test_code_layout.py``. The README's "How the code is laid out" draws the same
rules; a change that breaks one fails here with the file, line and rule.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = ("aigc_models", "jobs", "pipelines")
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_JOBS_ENTRIES = 400, 60, 8
# aigc_models: PyTorch and the formats of its own weights and tokenizers, nothing that runs or stores jobs
MODEL_IMPORTS = {"torch", "numpy", "safetensors", "tokenizers", "transformers", "diffusers"}
# jobs' packages, lowest first: a package imports only those below it (and itself)
JOBS_ORDER = {"runtime": 0, "store": 1, "data": 2, "gate": 3, "train": 4, "generate": 4, "mix": 4}


def _modules(root: Path, top: str) -> list[Path]:
    return sorted(p for p in (root / top).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (relative imports resolved to their package)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out += [(node.lineno, f"{base}.{a.name}" if not node.module and node.level else base) for a in node.names]
    return out


def layer_violations(root: Path) -> list[str]:
    wrong = []
    for path in _modules(root, "aigc_models"):
        for line, name in _imports(root, path):
            top = name.split(".")[0]
            if top not in MODEL_IMPORTS | {"aigc_models"} and top not in sys.stdlib_module_names:
                wrong.append(f"{path.relative_to(root)}:{line}: aigc_models imports {name}")
    for path in _modules(root, "jobs"):
        inside = path.relative_to(root / "jobs").parts
        mine = inside[0] if len(inside) > 1 else None
        for line, name in _imports(root, path):
            parts = name.split(".")
            if parts[0] in ("pipelines", "prefect"):
                wrong.append(f"{path.relative_to(root)}:{line}: jobs imports {name}")
            elif parts[0] == "jobs" and mine and len(parts) > 1 and parts[1] in JOBS_ORDER and parts[1] != mine \
                    and JOBS_ORDER[parts[1]] >= JOBS_ORDER[mine]:
                wrong.append(f"{path.relative_to(root)}:{line}: jobs.{mine} imports {name} (not below it)")
    return wrong


def test_layers_import_in_one_direction():
    assert layer_violations(REPO) == []


def test_the_layer_check_sees_a_backward_import(tmp_path):
    """The check itself, on a tree of its own: each kind of backward import is reported with its place."""
    (tmp_path / "jobs" / "store").mkdir(parents=True)
    (tmp_path / "aigc_models").mkdir()
    (tmp_path / "jobs" / "store" / "probe.py").write_text('"""probe"""\nfrom jobs.train.run import run_training\n'
                                                          'from ..gate import policy\nimport prefect\n')
    (tmp_path / "aigc_models" / "probe.py").write_text('"""probe"""\nimport torch\nimport ray.data\n')
    assert layer_violations(tmp_path) == [
        "aigc_models/probe.py:3: aigc_models imports ray.data",
        "jobs/store/probe.py:2: jobs.store imports jobs.train.run (not below it)",
        "jobs/store/probe.py:3: jobs.store imports jobs.gate (not below it)",
        "jobs/store/probe.py:4: jobs imports prefect"]


def test_modules_and_functions_stay_small_and_say_what_they_are():
    long_modules, long_functions, undocumented = [], [], []
    for top in SOURCE:
        for path in _modules(REPO, top):
            text = path.read_text()
            tree = ast.parse(text)
            if text.count("\n") > MAX_MODULE_LINES:
                long_modules.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
            if path.name != "__init__.py" or text.strip():
                if ast.get_docstring(tree) is None:
                    undocumented.append(str(path.relative_to(REPO)))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        long_functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert long_modules == [] and long_functions == [] and undocumented == []


def test_jobs_is_a_handful_of_stage_packages():
    entries = sorted(p.name for p in (REPO / "jobs").iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_JOBS_ENTRIES, entries
    assert set(entries) == {"__init__.py", *JOBS_ORDER}  # every package has its place in the order
