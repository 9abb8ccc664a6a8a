"""The commands that run no flow: ``inspect``, ``promote``, ``regenerate``, ``verify``, ``keys``, ``augment`` and
``serve``.

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


def keys(args: argparse.Namespace) -> int:
    """Makes the development signing chain (or says where it is) and how a config names a chain of its own."""
    from pathlib import Path

    from jobs.store.credentials import dev_folder, make_dev_chain, subject

    folder = Path(args.to) if args.to else dev_folder()
    existed = (folder / "key.pem").exists() and not args.force
    try:
        paths = make_dev_chain(folder, force=args.force)
    except OSError as exc:
        return _error(f"--to: cannot write {folder} ({exc.strerror or exc})")
    print(f"{'kept the' if existed else 'made a'} development signing chain in {folder}: "
          f"{subject(paths['chain'].read_bytes())}")
    for k, what in (("chain", "signing certificate (the chain: the root stays out of it, as C2PA asks)"), ("key", "private key (mode 600)"),
                    ("root", "root: the trust anchor `aigc verify` uses")):
        print(f"  {paths[k]}  {what}")
    print("UNTRUSTED: every summary, report and verification marks content it signs as signed by a development "
          "chain.\nA config uses it by default (signing.certificate/private_key left null); a team names its own:\n"
          "  signing:\n    certificate: /secrets/c2pa/chain.pem   # signer first, then intermediates\n"
          "    private_key: /secrets/c2pa/key.pem\n    trust_anchors: /secrets/c2pa/anchors.pem")
    return 0


def verify(cfg: Any, args: argparse.Namespace) -> int:
    """Verifies files and published rows (exit 0 only when every one passes every check that applies)."""
    from jobs.generate.verify import verify_file, verify_row
    from jobs.store.credentials import CredentialError, dev_folder
    from jobs.store.layout import open_root
    from jobs.store.storage import Store

    if not args.files and not args.ids:
        return _error("give a FILE or --id ID (repeatable)")
    try:
        trust = _trust_anchors(cfg, dev_folder())
        store = open_root(cfg.output) if Store(cfg.output).exists() else None
        if args.ids and store is None:
            raise ValueError(f"--id: nothing published under {Store(cfg.output).display()} (--out names ROOT)")
        results = [verify_file(open(f, "rb").read(), f, store, trust, not args.no_regenerate, args.use_gpu)
                   for f in args.files]
        results += [verify_row(store, i, trust, not args.no_regenerate, args.use_gpu) for i in args.ids]
    except (OSError, ValueError, CredentialError) as exc:
        return _error(str(exc))
    marks = {True: "ok  ", False: "FAIL", None: "--  "}
    for v in results:
        print(f"{'VERIFIED' if v.ok else 'NOT VERIFIED'}  {v.subject}" + (f"  (row {v.row_id})" if v.row_id and v.row_id != v.subject else ""))
        for c in v.checks:
            print(f"  {marks[c.ok]} {c.name:<12} {c.detail}")
    if trust is None:
        print("note: no trust anchors (signing.trust_anchors, or a development chain here): signers were not checked")
    good = sum(v.ok for v in results)
    print(f"{good}/{len(results)} verified")
    return 0 if good == len(results) else 1


def _trust_anchors(cfg: Any, dev: Any) -> bytes | None:
    """The PEM anchors verification trusts: the config's, else this machine's development root, else none."""
    from pathlib import Path

    path = cfg.signing.trust_anchors or (str(dev / "root.pem") if cfg.signing.certificate is None else None)
    if path is None or (cfg.signing.trust_anchors is None and not Path(path).exists()):
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"signing.trust_anchors: cannot read {path} ({exc.strerror or exc})") from None


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
