"""Where every benchmark's JSON goes (``benchmarks/results/`` unless ``--json`` says otherwise)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(results: dict[str, Any], path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return out
