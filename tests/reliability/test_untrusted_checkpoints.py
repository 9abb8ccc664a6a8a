"""Scenario 8: a malicious checkpoint where a model or a training state is expected is refused, never run.

Only safetensors (tensors + JSON metadata) and JSON are ever loaded; a pickle whose ``__reduce__`` would
write a marker file is refused everywhere the pipeline reads weights or training state.
"""

import ast
import json
import pickle
from pathlib import Path

import pytest
import torch

import aigc_models
from aigc_models import CheckpointError

REPO = Path(__file__).resolve().parents[2]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_file(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Evil(str(marker))))
    torch.save({"x": _Evil(str(marker))}, path.with_suffix(".pt"))  # a torch-style pickle beside it, too


def test_a_pickle_in_the_registry_is_refused_and_never_executed(tmp_path):
    from jobs.store import registry
    from jobs.store.storage import Store

    store, marker = Store(str(tmp_path / "root")), tmp_path / "pwned"
    version = tmp_path / "root" / "models" / "evil" / "v1"
    _evil_file(version / "model.safetensors", marker)
    (version / "model_card.json").write_text(json.dumps({  # a well-formed card: the weights are the trap
        "name": "evil", "version": "v1", "family": "dcgan", "modality": "image", "config": {"resolution": 16, "channels": 1},
        "parameters": 1, "dataset_version": "d", "checkpoint_sha256": "x", "created_at": "2026-01-01T00:00:00+00:00"}))
    (version.parent / "production.json").write_text('{"model": "evil", "version": "v1"}')
    ref = registry.resolve(store, "evil")
    with pytest.raises(CheckpointError, match="not a safetensors model file"):
        registry.load(store, ref)
    assert not marker.exists()


def test_a_pickle_as_a_training_state_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    _evil_file(tmp_path / "train_state.safetensors", marker)
    with pytest.raises(CheckpointError, match="not a safetensors training state"):
        aigc_models.load_state(tmp_path / "train_state.safetensors")
    model = aigc_models.build("gpt", {"block_size": 16, "n_layer": 1, "n_head": 1, "n_embd": 8})
    aigc_models.save(model, tmp_path / "weights.safetensors")  # valid safetensors, but not a training state
    with pytest.raises(CheckpointError, match="no training-state skeleton"):
        aigc_models.load_state(tmp_path / "weights.safetensors")
    assert not marker.exists()


def test_training_state_round_trips_tensors_ints_and_tuples(tmp_path):
    tree = {"optimizers": {"model": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}},
                                     "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": [0]}]}},
            "rng": [["MT19937", torch.arange(4), 2, 0, 0.0]], "resumed_from": None, "epoch": 2}
    aigc_models.save_state(tree, tmp_path / "s.safetensors")
    back = aigc_models.load_state(tmp_path / "s.safetensors")
    state = back["optimizers"]["model"]["state"]
    assert list(state) == [0] and torch.equal(state[0]["exp_avg"], torch.ones(2, 2))
    assert back["optimizers"]["model"]["param_groups"][0]["betas"] == (0.9, 0.99)
    assert back["rng"][0][0] == "MT19937" and torch.equal(back["rng"][0][1], torch.arange(4))
    assert back["resumed_from"] is None and back["epoch"] == 2


UNPICKLERS = {"torch.load", "torch.serialization.load", "pickle.load", "pickle.loads", "pickle.Unpickler",
              "cloudpickle.load", "cloudpickle.loads", "dill.load", "dill.loads", "joblib.load", "pandas.read_pickle",
              "_pickle.load", "_pickle.loads"}


def unpickling_calls(source: str) -> list[int]:
    """Lines of ``source`` that call something that unpickles, whatever it was imported as: ``import pickle as
    p; p.loads``, ``from torch import load``, ``torch.serialization.load``, ``pd.read_pickle``, and
    ``numpy.load`` given ``allow_pickle``."""
    names: dict[str, str] = {}  # local name -> what it is
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(expr: ast.AST) -> str | None:
        parts = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        return ".".join([names.get(expr.id, expr.id), *reversed(parts)])

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (name := dotted(node.func)):
            if name in UNPICKLERS or (name == "numpy.load" and any(k.arg == "allow_pickle" for k in node.keywords)):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(f)", "from torch import load\nload(f)", "from torch import load as l\nl(f)",
    "import pickle as p\np.loads(b)", "from pickle import loads\nloads(b)", "import pandas as pd\npd.read_pickle(f)",
    "import torch\ntorch.serialization.load(f)", "import numpy as np\nnp.load(f, allow_pickle=True)",
    "import torch.serialization\ntorch.serialization.load(f)", "import joblib\njoblib.load(f)"])
def test_the_scan_finds_every_spelling_of_an_unpickling_call(snippet):
    assert unpickling_calls(snippet) == [2]


def test_the_scan_leaves_safe_loads_alone():
    assert unpickling_calls("import json, numpy as np\nfrom safetensors.torch import load_file\n"
                            "json.load(f); np.load(f); load_file(p); pd_read = 1") == []


def test_no_code_path_unpickles_and_torch_is_recent_enough():
    """No call that unpickles appears anywhere in the package, under any import spelling."""
    calls = [f"{path.relative_to(REPO)}:{line}" for package in ("aigc_models", "jobs", "pipelines")
             for path in sorted((REPO / package).rglob("*.py")) for line in unpickling_calls(path.read_text())]
    assert calls == []
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert (major, minor) >= (2, 6)  # weights_only by default; older torch.load runs pickles
