"""The commands that run no flow: ``inspect``, ``promote``, ``regenerate``, ``augment`` and ``serve``.

Each takes the validated config and the parsed arguments and returns the exit code: 0 done, 2 a bad argument or
input (one line naming it), 1 a run that failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any


def _error(message: str) -> int:
    print(f"aigc: error: {message}", file=sys.stderr)
    return 2


def inspect(path: str, grid: str | None) -> int:
    from .inspect_path import describe_path

    try:
        print(describe_path(path, grid))
        return 0
    except (FileNotFoundError, ValueError) as exc:
        return _error(str(exc))


def promote(cfg: Any, args: argparse.Namespace) -> int:
    """Promotes ``args.version`` of ``args.model`` (exit 2 if it does not exist), or lists the versions."""
    from jobs.store import registry
    from jobs.store.storage import Store

    store = Store(cfg.output)
    try:
        if args.version:
            registry.promote_version(store, args.model, args.version)
            print(f"{args.model}: production is now {args.version}")
            return 0
        rows = registry.versions(store, args.model)
    except FileNotFoundError as exc:
        return _error(str(exc))
    for card, production in rows:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(card.final_metrics.items()) if "loss" in k)
        print(f"{'*' if production else ' '} {card.version}  {card.steps:>6} steps  data {card.dataset_version}  {metrics}")
    return 0


def regenerate(cfg: Any, args: argparse.Namespace) -> int:
    """Rebuilds published rows and says, per id, whether it is identical (exit 1 unless all are)."""
    from jobs.generate.regenerate import regenerate as rebuild
    from jobs.store.layout import open_root
    from jobs.store.storage import Store

    ids = list(args.ids)
    try:
        if args.ids_file:
            with open(args.ids_file, encoding="utf-8") as f:
                ids += [line.strip() for line in f if line.strip()]
        if not ids:
            raise ValueError("give --id ID (repeatable) or --ids FILE")
        results, missing, refused = rebuild(open_root(cfg.output), ids, args.to, args.use_gpu)
    except (OSError, ValueError) as exc:
        return _error(str(exc))
    for r in results:
        print(f"{'ok  ' if r.identical else 'DIFF'} {r.id}  {r.run_date}  {r.model}  {r.detail}  {r.path or ''}")
    for i, why in refused.items():
        print(f"REFUSED {i}  {why}: never published")
    for i in missing:
        print(f"MISS {i}  not found in any published partition or rejects table under {Store(cfg.output).display()}")
    same = sum(r.identical for r in results)
    print(f"{same}/{len(ids)} rows regenerated identically" + (f"; files in {args.to}" if results else ""))
    return 0 if same == len(ids) else 1


def augment(cfg: Any, args: argparse.Namespace) -> int:
    """Builds the augmented dataset with pyarrow on this machine (no Ray, no Prefect): it reads small columns to
    choose rows and streams the chosen rows' content once."""
    from jobs.mix.mixture import MixError, build_mixture
    from jobs.store.cards import write_cards
    from jobs.store.layout import open_root

    from . import summary

    started = time.time()
    try:
        store = open_root(cfg.output)
        result = build_mixture(cfg.augment, store, args.dates)
        write_cards(store, cfg.card, cfg.name)
    except MixError as exc:  # inputs or settings that cannot make a mixture: one line naming the augment.* key
        return _error(str(exc))
    except KeyboardInterrupt:
        print("aigc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"aigc: augment failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(summary.render(f"aigc augment: {cfg.name}", summary.augment_lines(result), time.time() - started))
    return 0


def serve(cfg: Any, args: argparse.Namespace) -> int:
    """Serves the nightly flow as a Prefect deployment on the config's cron schedule, until Ctrl-C."""
    import os

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from the local server
    from prefect import serve as prefect_serve

    from .prefect_api import PrefectUnavailable, start_prefect_api
    from .schedule import build_deployment

    try:
        start_prefect_api()()
    except PrefectUnavailable as exc:
        print(f"aigc: serve failed: {exc}", file=sys.stderr)
        return 1
    print(f"serving '{cfg.name}' nightly on cron '{cfg.schedule.cron}' ({cfg.schedule.timezone}); Ctrl-C stops")
    prefect_serve(build_deployment(cfg))
    return 0
