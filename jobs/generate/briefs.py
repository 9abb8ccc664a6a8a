"""Request tables: campaign briefs as rows, turned into ``RequestSpec``s plus the columns to pass through.

A brief is ``request_id``, ``model``, ``count`` and ``label`` or ``prompt``, with optional sampler columns;
every other column is kept, with its Arrow type, and copied onto each row generated for the brief so a
campaign tool can join the output back to its briefs. Briefs are few (one per product or campaign line),
so a table is read whole; its rows are validated like config requests, each error naming the table row.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from jobs.data.tables import open_table
from jobs.generate.spec import SAMPLER_KEYS, RequestSpec, RequestTableSpec
from jobs.store import schema

REQUIRED = ("request_id", "model", "count")
CONDITIONS = ("label", "prompt")


def load(spec: RequestTableSpec) -> tuple[list[RequestSpec], list[str], pa.Table]:
    """(requests, where each came from, the pass-through columns: one row per request)."""
    table_schema, batches = open_table(spec.path, spec.format, what="request table")
    table = pa.Table.from_batches(list(batches), schema=table_schema)
    names = table.column_names
    missing = [c for c in REQUIRED if c not in names]
    if missing or not any(c in names for c in CONDITIONS):
        need = missing + ([] if any(c in names for c in CONDITIONS) else ["label or prompt"])
        raise ValueError(f"request table {spec.path}: missing column(s) {', '.join(need)} "
                         f"(it has {', '.join(names)})")
    known = set(REQUIRED) | set(CONDITIONS) | set(SAMPLER_KEYS)
    passthrough = [c for c in names if c not in known]
    clash = [c for c in passthrough if c in schema.GENERATED.names]
    if clash:
        raise ValueError(f"request table {spec.path}: column(s) {', '.join(clash)} would shadow generated columns; rename them")
    requests, where = [], []
    for i, row in enumerate(table.select([c for c in names if c in known]).to_pylist()):
        place = f"request table {spec.path} row {i + 1}"
        requests.append(_request(row, place))
        where.append(place)
    return requests, where, table.select(passthrough)


def _request(row: dict[str, Any], place: str) -> RequestSpec:
    fields: dict[str, Any] = {"id": None if row["request_id"] is None else str(row["request_id"]), "model": row["model"]}
    if fields["id"] is None:
        raise ValueError(f"{place}: request_id is empty")
    if row.get("label") is not None:
        fields.update(labels=[str(row["label"])], per_label=row["count"])
    elif row.get("prompt") is not None:
        fields.update(prompts=[row["prompt"]], per_prompt=row["count"])
    else:
        raise ValueError(f"{place}: give a label (image models) or a prompt (text models)")
    fields.update({k: row[k] for k in SAMPLER_KEYS if row.get(k) is not None})
    try:
        return RequestSpec(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = {"per_label": "count", "per_prompt": "count", "labels": "label", "prompts": "prompt"}.get(
            str(err["loc"][0]) if err["loc"] else "", ".".join(map(str, err["loc"])))
        raise ValueError(f"{place}: {key}: {err['msg']}") from None


def stack(tables: list[tuple[pa.Table, int]]) -> pa.Table | None:
    """All tables' pass-through columns stacked, one row per request (``(columns, rows)`` per table; a column
    a table lacks is null for its rows). ``None`` when no table has any."""
    fields: dict[str, pa.Field] = {}
    for table, _ in tables:
        for f in table.schema:
            fields.setdefault(f.name, f)
    if not fields:
        return None
    parts = [pa.table({name: table.column(name) if name in table.column_names else pa.nulls(rows, f.type)
                       for name, f in fields.items()}) for table, rows in tables]
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"request tables: a pass-through column has different types in different tables: {exc}") from None
