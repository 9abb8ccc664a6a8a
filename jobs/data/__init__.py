"""Preprocessing: the configured sources read into raw units (``sources`` and one module per kind of source),
cleaned unit by unit (``cleaning``) in Ray Data batches (``batches``), deduplicated and versioned (``dedup``),
split and committed as a curated version (``curate``); ``curated`` reads a version back for every later stage."""
