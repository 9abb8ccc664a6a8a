"""``aigc``: the command line of the AIGC batch pipeline.

Exit codes: 0 success, 2 bad config or arguments (one line naming the key), 1 a run that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from datetime import date
from typing import Any, Callable

from . import commands

EPILOG = """\
examples:
  aigc nightly                                  # the demo: configs/demo.yaml, output in ./runs
  aigc nightly --config my.yaml --date 2026-11-20
  aigc nightly --config my.yaml --date 2026-11-01..2026-11-07   # backfill a week, one partition per date
  aigc train --config my.yaml --model digits-vae --set train.epochs=3
  aigc train --model digits-vae                 # after Ctrl-C or a lost machine: resumes that run (--fresh: not)
  aigc generate --config my.yaml --count 100 --set generate.batch_size=32
  aigc inspect runs/generated/date=2026-11-23
  aigc promote digits-vae                       # list versions (* = production) with their final metrics
  aigc promote digits-vae 20261124-231157-c21694dd
  aigc regenerate --id 3f2a9c0d1e4b5a6978877665  # rebuild a published row and check it is identical
  aigc verify --id 3f2a9c0d1e4b5a6978877665     # its signed Content Credentials, lineage and regeneration
  aigc verify downloads/3f2a.png                # a file: who signed it, is it intact, which row is it
  aigc augment --config my.yaml --set augment.synthetic_ratio=0.3 --set augment.balance=per_label

--set takes dotted keys into the YAML (list items by index) and YAML values:
  --set train.num_workers=4  --set models.0.epochs=20  --set ray.address=ray://head:10001

Ray: a new local instance by default, even where `ray start` runs; --ray-address auto (the cluster this machine
  runs), HOST:PORT or ray://head:10001 (or ray.address, RAY_ADDRESS) joins a cluster. What a stage asks for is
  checked against the cluster's nodes first: a pool or worker group that cannot fit fails at once, naming the key.
Prefect: a temporary local server by default (its first start on a machine creates its database: a minute or
  more); set PREFECT_API_URL to use yours.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aigc", description="Nightly batch content generation on Ray and Prefect.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--traceback", action="store_true", help="print the full traceback when a run fails")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:  # every command that reads a config
        sp.add_argument("--config", help="job config YAML (default: configs/demo.yaml)")
        sp.add_argument("--out", help="output ROOT, overriding the config's 'output' (local path or URI)")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (repeatable), e.g. train.epochs=3")
        sp.add_argument("--verbose", action="store_true", help="show everything live (Ray's and Prefect's logs, "
                        "worker output); by default the console shows stages, progress, warnings and the summary, and "
                        "the rest goes to ROOT/logs/<command>-<time>.log, named in the summary")
        sp.add_argument("--ray-address", metavar="ADDRESS", help="run the Ray work on this cluster: 'auto' (the node's "
                        "running cluster) or 'ray://head:10001' (default: ray.address, else RAY_ADDRESS, else a local Ray)")

    _stage_commands(sub, common)
    _tool_commands(sub, common)
    return p


def _stage_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """The pipeline's stages: each runs its Prefect flow."""
    sp = sub.add_parser("preprocess", help="ingest, clean, deduplicate, split and version the sources")
    common(sp)
    sp = sub.add_parser("train", help="train the config's models on the latest curated dataset (Ray Train)")
    common(sp)
    sp.add_argument("--model", action="append", help="train only this model (repeatable)")
    sp.add_argument("--dataset-version", help="curated version to train on (default: the latest)")
    sp.add_argument("--promote", action="store_true",
                    help="make the new version production (default: only a model's first version is; see `aigc promote`)")
    sp.add_argument("--fresh", action="store_true",
                    help="start over instead of resuming an interrupted run of the same config and data")
    sp = sub.add_parser("generate", help="generate the config's requests for a date (Ray Data)")
    common(sp)
    sp.add_argument("--date", type=_date, help="run date YYYY-MM-DD (default: today in the schedule's timezone)")
    sp.add_argument("--count", type=int, help="generate only the first N rows of the requests")
    sp.add_argument("--refresh", action="store_true", help="regenerate a date even if it is already published from "
                    "the same requests, models and settings (by default that is a no-op)")
    sp = sub.add_parser("nightly", help="the scheduled night: preprocess, train if needed, evaluate, generate, "
                        "gate, publish, report", description="Runs the nightly flow once per date: preprocess -> "
                        "train (only when the curated data or the model config changed, or on train.retrain.every_days) "
                        "-> evaluate and promote the candidate -> generate -> quality gate -> publish -> report "
                        "(ROOT/reports/run_date=D/index.html). A night whose output fails the gate publishes nothing "
                        "and exits 1 with the reason. A date range backfills, oldest first, one partition per date.")
    common(sp)
    sp.add_argument("--date", type=_date_range, help="run date YYYY-MM-DD, or a range FROM..TO (inclusive) to "
                    "backfill (default: today in the schedule's timezone; a scheduled run takes the date it was due)")
    sp.add_argument("--refresh", action="store_true", help="recompute preprocessing and training even if this night "
                    "already ran them (by default a re-run of a failed night reuses the stages that succeeded)")


def _tool_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Commands around the stages: serving the schedule, the registry, checking and mixing published rows."""
    sp = sub.add_parser("serve", help="serve the nightly flow as a Prefect deployment on the config's cron schedule")
    common(sp)
    sp = sub.add_parser("promote", help="point a model's production.json (what generation uses) at a version")
    common(sp)
    sp.add_argument("model", help="model name (as in the config's models)")
    sp.add_argument("version", nargs="?", help="version to promote; without it, list the versions")
    sp = sub.add_parser("regenerate", help="rebuild published rows from their recorded seed and model version, "
                        "and check they are identical", description="Rebuilds published rows (any date) from their "
                        "recorded model version, seed, condition and sampler settings, and checks the pixels or "
                        "text (and an image's PNG bytes) are identical to what was published. Exit 0 if every row "
                        "is found and identical, 1 otherwise. Rows generated on a GPU reproduce on a GPU "
                        "(--use-gpu); the rule holds per device type.")
    common(sp)
    sp.add_argument("--id", dest="ids", action="append", default=[], metavar="ID", help="row id (repeatable)")
    sp.add_argument("--ids", dest="ids_file", metavar="FILE", help="a file of row ids, one per line")
    sp.add_argument("--to", default="regenerated", metavar="DIR", help="where the rebuilt files go (default: ./regenerated)")
    sp.add_argument("--use-gpu", action="store_true", help="sample on a GPU (for rows that were generated on one)")
    sp = sub.add_parser("verify", help="check the Content Credentials, lineage, signed partition and regeneration "
                        "of image files or published rows", description="Verifies image FILEs and published rows "
                        "(--id): the C2PA manifest read with c2pa-python (signature, the hash of every byte outside it, "
                        "each assertion, the signer's chain up to signing.trust_anchors or this machine's development "
                        "root, trainedAlgorithmicMedia), its lineage against the published row, the night's signed "
                        "manifest and the row's file hash, and, with the checkpoint at hand, that the row regenerates "
                        "bit-identically from its seed. Exit 0 only if every file and row passes.")
    common(sp)
    sp.add_argument("files", nargs="*", metavar="FILE", help="an image file (a published PNG, or one that claims to be)")
    sp.add_argument("--id", dest="ids", action="append", default=[], metavar="ID", help="a published row id (repeatable)")
    sp.add_argument("--no-regenerate", action="store_true", help="skip sampling the row again (quicker; no model needed)")
    sp.add_argument("--use-gpu", action="store_true", help="regenerate on a GPU (for rows that were generated on one)")
    sp = sub.add_parser("keys", help="make the development signing chain (untrusted) the demo signs with",
                        description="Makes a development C2PA signing chain: a root and a signing certificate "
                        "(ES256) in ~/.aigc/dev-keys (or --to). A config that names no chain of its own signs with it; "
                        "everything it signs is marked untrusted. See docs/provenance.md for a chain of your own.")
    sp.add_argument("--to", metavar="DIR", help="where the chain goes (default: ~/.aigc/dev-keys, or AIGC_KEYS_DIR)")
    sp.add_argument("--force", action="store_true", help="replace an existing chain (what it signed stops verifying)")
    sp = sub.add_parser("augment", help="mix curated real rows and published synthetic rows into one training dataset",
                        description="Mixes curated real rows (the train split by default) and published synthetic "
                        "rows of one modality into ROOT/augmented/<mix_version>/ with an is_synthetic column, as the "
                        "config's `augment` section says (synthetic_ratio, balance, dates, models, labels, max_rows). "
                        "The same inputs and settings give the same rows and folder.")
    common(sp)
    sp.add_argument("--date", dest="dates", type=_date, action="append", metavar="YYYY-MM-DD",
                    help="generated partition to mix (repeatable; overrides augment.dates; default: the latest)")
    sp = sub.add_parser("inspect", help="summarise a curated dataset, generated partition or model version")
    sp.add_argument("path")
    sp.add_argument("--grid", help="where a curated dataset's sample grid PNG goes (default: ./curated-<version>-samples.png)")

def _date(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {value!r}") from None


MAX_BACKFILL_DAYS = 366


def _date_range(value: str) -> list[str]:
    """``YYYY-MM-DD`` or ``FROM..TO`` (inclusive) -> the dates, oldest first."""
    first, _, last = value.partition("..")
    start, end = date.fromisoformat(_date(first)), date.fromisoformat(_date(last or first))
    if end < start:
        raise argparse.ArgumentTypeError(f"the range {value!r} ends before it starts")
    days = (end - start).days + 1
    if days > MAX_BACKFILL_DAYS:
        raise argparse.ArgumentTypeError(f"the range {value!r} has {days} dates (at most {MAX_BACKFILL_DAYS})")
    return [date.fromordinal(start.toordinal() + i).isoformat() for i in range(days)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inspect":
        return commands.inspect(args.path, args.grid)
    if args.command == "keys":
        return commands.keys(args)

    from jobs.store.credentials import CredentialError, load_signer

    from .config import ConfigError, load_config

    try:
        extra = (["train.promote=always"] if getattr(args, "promote", False) else []) + \
            ([f"ray.address={args.ray_address}"] if getattr(args, "ray_address", None) else [])
        cfg = load_config(args.config, args.overrides + extra, args.out)
        for name in (args.model or []) if args.command == "train" else []:
            cfg.model(name)
        if getattr(args, "count", None) is not None and args.count < 1:
            raise ConfigError("--count: must be at least 1")
        if args.command in ("nightly", "generate") and cfg.signing.enabled:  # before any work: a chain that
            s = cfg.signing                                                # cannot sign is a config error
            load_signer(s.certificate, s.private_key, s.trust_anchors, s.algorithm, s.timestamp_url, say=print)
    except (ConfigError, CredentialError) as exc:
        print(f"aigc: error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("promote", "regenerate", "verify", "augment", "serve"):
        return getattr(commands, args.command)(cfg, args)
    return _run_flow(cfg, args)


def _run_flow(cfg: Any, args: argparse.Namespace) -> int:
    """A stage's flow (or the night's) with the console of ``pipelines.console``, then its summary."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from the local server
    from jobs.runtime import progress

    from . import summary
    from .console import Console
    from .prefect_api import start_prefect_api

    started = time.time()
    root = cfg.output if "://" in cfg.output else os.path.abspath(cfg.output)
    with Console(root, args.command, args.verbose) as console:
        code, result, failure = _run(cfg, args, start_prefect_api(progress.say))
    log = console.log_path  # after the run: an object-store ROOT gets its log at the end
    if failure:
        print(f"aigc: {failure}\naigc: the full log: {log}", file=sys.stderr)
        return code
    if args.command == "preprocess":
        lines = summary.preprocess_lines(result)
    elif args.command == "train":
        from jobs.store.storage import Store

        lines = summary.train_lines(result, Store(cfg.output).display)
    elif args.command == "generate":
        lines = summary.generate_lines(result)
    else:
        lines = [line for night in (result if isinstance(result, list) else [result])
                 for line in summary.night_lines(night, cfg.output)]
    lines.append(("log", log))
    print(summary.render(f"aigc {args.command}: {cfg.name}", lines, time.time() - started))
    return 0


def _run(cfg: Any, args: argparse.Namespace, prefect_ready: Callable[[], None]) -> tuple[int, Any, str | None]:
    """Runs the command's flow: (exit code, result, None) or (code, None, the one line that says why not)."""
    import ray

    from jobs.runtime.cluster import ensure_ray
    from jobs.runtime.usage import NightOverBudget

    from . import flows

    ray_was_running = ray.is_initialized()  # a caller's Ray (tests, notebooks) is left running
    failed = lambda exc: (traceback.format_exc() if args.traceback else "") + \
        f"{args.command} failed: {type(exc).__name__}: {exc}"  # noqa: E731
    runners: dict[str, Callable[[], Any]] = {
        "preprocess": lambda: flows.preprocess_flow(cfg),
        "train": lambda: flows.train_flow(cfg, args.model, args.dataset_version, args.fresh),
        "generate": lambda: flows.generate_flow(cfg, args.date, args.count, args.refresh),
        "nightly": lambda: (flows.backfill_flow(cfg, args.date, args.refresh) if args.date and len(args.date) > 1
                            else flows.nightly_flow(cfg, args.date[0] if args.date else None, args.refresh)),
    }
    try:
        try:  # here, not in the first task: a cluster that cannot be joined fails at once, without task retries
            ensure_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.listen, cfg.ray.dashboard, cfg.ray.autoscaling)
            prefect_ready()
        except Exception as exc:
            return 1, None, failed(exc)
        return 0, runners[args.command](), None
    except NightOverBudget as exc:  # a KeyboardInterrupt to Ray and Prefect, a failed night to the person
        return 1, None, failed(exc)
    except KeyboardInterrupt:
        return 130, None, "interrupted"
    except Exception as exc:  # a failed run: one clear line, the traceback on request
        return 1, None, failed(exc)
    finally:
        if not ray_was_running and ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
