"""Raw input units: what a source reader yields and preprocessing stages as Parquet before cleaning.

Columns: ``source``, ``input_ref`` (where the unit came from, for people), ``modality``, ``label``, ``payload``
(encoded image bytes, or None), ``text`` (or None), ``path`` (an image to read later, in the cleaning task),
``reject`` (``reason:detail`` when the reader already knows the unit is bad), ``encoding`` (texts: the decoding
used), ``attributes`` (JSON of a table's other columns) and ``position`` (input order across sources). One row
per input unit: every unit is later accepted or rejected, never dropped, so the manifest's accounting adds up.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

RAW_COLUMNS = ["source", "input_ref", "modality", "label", "payload", "text", "path", "reject", "encoding",
               "attributes"]

RAW_SCHEMA = pa.schema([("source", pa.string()), ("input_ref", pa.string()), ("modality", pa.string()),
                        ("label", pa.string()), ("payload", pa.binary()), ("text", pa.string()), ("path", pa.string()),
                        ("reject", pa.string()), ("encoding", pa.string()), ("attributes", pa.string()),
                        ("position", pa.int64())])


def raw_frame(df: pd.DataFrame, source_id: str) -> pd.DataFrame:
    """``df`` with every raw column (missing ones null), in order, tagged with ``source_id``."""
    for col in RAW_COLUMNS:
        if col not in df:
            df[col] = None
    df["source"] = source_id
    return df[RAW_COLUMNS + (["position"] if "position" in df else [])].reset_index(drop=True)
