"""Batch generation on Ray Data: the night's plan (``plan``, request tables in ``briefs``), the sampling and
finishing actors (``actors``, row filters in ``filters``), pool sizes (``pools``), a resumable staging folder
(``staging``), the manifest and publishing (``manifest``), the driver (``run``) and ``aigc regenerate``."""
