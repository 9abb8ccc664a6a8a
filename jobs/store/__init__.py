"""Everything under ROOT and what its files look like: the ``Store`` (a local folder or an object-store URI),
where each thing lives (``layout``), the one way a folder becomes visible (``commit``), the model registry
(``registry``, typed ``ModelCard``s), Parquet schemas, PNGs with their AI-content label (``png``,
``provenance``), dataset cards, pictures, the nightly lease and the path policy (``security``).

Every other stage reads and writes through here; this package imports no other stage.
"""

from jobs.store.storage import Store

__all__ = ["Store"]
