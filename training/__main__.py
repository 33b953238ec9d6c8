"""Command line of the training job: ``python -m training {fit,generate-sample-data,bootstrap}``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from service import artifact
from training.retention import DEFAULT_KEEP, PruneReport, prune

log = logging.getLogger("training")

SAMPLE_EVENTS = "events.csv.gz"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit status (0 ok, 1 failed, 2 usage)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.command(args) or 0)
    except Exception as e:  # fail fast: one clear line, no partial artifact (writes are atomic)
        if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
            log.exception("failed")
        log.error("%s: %s", type(e).__name__, e)
        return 1


def _fit(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.pipeline import Inputs, format_table, run

    inputs = Inputs(
        events=[str(p) for p in args.events],
        items=args.items,
        customers=args.customers,
        on_bad_rows=args.on_bad_rows,
        suppressions=args.suppressions,
    )
    path = run(
        inputs, args.model_dir, load_config(args.config), progress=args.progress, force=args.force
    )
    metrics = artifact.load(path, verify_checksums=False).manifest.metrics
    if metrics:
        print(format_table(metrics))
    if args.keep_versions:
        _log_prune(prune(args.model_dir, args.keep_versions))
    print(path)
    return 0


def _prune(args: argparse.Namespace) -> int:
    report = prune(args.model_dir, args.keep, dry_run=args.dry_run)
    _log_prune(report, dry_run=args.dry_run)
    print(msgspec.json.encode(report).decode())
    return 0


def _log_prune(report: PruneReport, *, dry_run: bool = False) -> None:
    verb = "would remove" if dry_run else "removed"
    for name in [*report.removed, *report.leftovers_removed]:
        log.info("%s %s", verb, name)
    log.info(
        "kept %d model version(s), %s %d (%.1f MB)",
        len(report.kept),
        verb,
        len(report.removed) + len(report.leftovers_removed),
        report.bytes_freed / 1e6,
    )


def _tune(args: argparse.Namespace) -> int:
    from training.config import load_config
    from training.errors import TrainingError
    from training.evaluate import SplitError
    from training.experiment import SideInfo
    from training.pipeline import (
        Inputs,
        read_catalogue,
        read_customers,
        read_events,
        with_data_scale,
    )
    from training.tuning import to_toml, tune

    inputs = Inputs(
        events=[str(p) for p in args.events],
        items=args.items,
        customers=args.customers,
        on_bad_rows=args.on_bad_rows,
    )
    events, _ = read_events(inputs)
    config = with_data_scale(load_config(args.config), events)
    models = args.models or [m for m in config.selection.blend_parts if m != "blend"]
    try:
        tuned, found = tune(
            events,
            config,
            SideInfo(items=read_catalogue(inputs), customers=read_customers(inputs)),
            models=models,
            trials=args.trials,
            weight_trials=args.weight_trials,
        )
    except SplitError as e:
        raise TrainingError(f"nothing to tune on: {e}") from e
    Path(args.out).write_text(to_toml(tuned))
    for name, result in found.items():
        log.info("tuned %s: %s", name, result)
    print(args.out)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from training.sample import SampleConfig, write_sample

    config = SampleConfig(
        seed=args.seed, customers=args.customers, items=args.items, days=args.days
    )
    for kind, path in write_sample(args.out, config, fmt=args.format).items():
        print(f"{kind}: {path}")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    """What ``make run`` needs: sample data if there is none, a first model if there is none."""
    from training.config import TrainConfig
    from training.pipeline import Inputs, run
    from training.sample import SampleConfig, write_sample

    data = Path(args.data_dir)
    if not (data / SAMPLE_EVENTS).is_file():
        log.info("no sample data in %s: generating it", data)
        write_sample(data, SampleConfig(seed=args.seed))
    if artifact.latest_version(args.model_dir) is None:
        log.info("no model in %s: training a first one on %s", args.model_dir, data)
        inputs = Inputs(
            events=[str(data / SAMPLE_EVENTS)],
            items=str(data / "items.csv.gz"),
            customers=str(data / "customers.csv.gz"),
        )
        run(inputs, args.model_dir, TrainConfig(), progress=False)
    else:
        log.info("model %s found in %s", artifact.latest_version(args.model_dir), args.model_dir)
    return 0


def _export(args: argparse.Namespace) -> int:
    import redis

    from training.export import Exporter

    client = redis.Redis.from_url(args.redis_url)
    exporter = Exporter(
        client,
        args.out,
        prefix=args.prefix,
        group=args.group,
        consumer=args.consumer,
        batch=args.batch,
        claim_idle_seconds=args.claim_idle_seconds,
        default_personalisation=_default_personalisation(args.default_personalisation),
    )
    report = exporter.run()
    print(
        f"exported {report.exported} events into {report.files} file(s), dropped {report.dropped}, "
        f"recovered {report.recovered_batches} interrupted batch(es)"
    )
    return 0


def _default_personalisation(given: str | None) -> bool:
    if given is not None:
        return given == "true"
    from_env = _env_flag("DEFAULT_PERSONALISATION")
    return True if from_env is None else from_env


def _env_flag(name: str) -> bool | None:
    """A boolean setting ``name`` from the environment: ``RECO_<name>``, as the service reads
    it (``true``/``false``/``1``/``0``), else the plain ``<name>``, which only this command
    reads; None when neither is set.

    Raises:
        SystemExit: the value is not a boolean (the message names the variable).
    """
    for var in (f"RECO_{name}", name):
        value = os.environ.get(var, "")
        if value:
            try:
                return msgspec.convert(value, bool, strict=False)
            except msgspec.ValidationError:
                raise SystemExit(f"{var}={value!r} is not true or false") from None
    return None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 0")
    return value


def _tunable(name: str) -> str:
    from training.tuning import SCALAR_SPACES, SPACES  # only when --models is given: heavy

    known = sorted({*SPACES, *SCALAR_SPACES})
    if name not in known:
        raise argparse.ArgumentTypeError(f"{name!r} cannot be tuned; one of {', '.join(known)}")
    return name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    fit = sub.add_parser("fit", help="train a model on event files and publish it as LATEST")
    fit.add_argument(
        "--events",
        nargs="+",
        required=True,
        metavar="PATH",
        help="event files (CSV, gzip CSV, Parquet) or folders of them",
    )
    fit.add_argument(
        "--items", metavar="PATH", help="item metadata (item_id, category, brand, price)"
    )
    fit.add_argument("--customers", metavar="PATH", help="customer metadata (customer_id, ...)")
    fit.add_argument(
        "--model-dir", required=True, metavar="DIR", help="where versions and LATEST live"
    )
    fit.add_argument(
        "--suppressions",
        metavar="FILE",
        help="erased customers to drop (the exporter's _suppressions.json)",
    )
    fit.add_argument(
        "--config", metavar="FILE", help="TOML training config (see training/config.py)"
    )
    fit.add_argument(
        "--on-bad-rows",
        choices=["skip", "reject"],
        default="skip",
        help="skip and count bad rows (default), or reject a file that has any",
    )
    fit.add_argument(
        "--force",
        action="store_true",
        help="replace LATEST even when the new model tests worse than it by more than the margin",
    )
    fit.add_argument(
        "--keep-versions",
        type=_non_negative,
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"then remove all but the N newest versions and LATEST's (default {DEFAULT_KEEP}; "
        "0: keep every version)",
    )
    fit.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=sys.stderr.isatty(),
        help="show progress bars (default: when stderr is a terminal)",
    )
    fit.set_defaults(command=_fit)

    tune = sub.add_parser(
        "tune",
        help="search weights, decay, model and blend parameters on a validation period; "
        "write a TOML config for fit --config",
    )
    tune.add_argument("--events", nargs="+", required=True, metavar="PATH")
    tune.add_argument("--items", metavar="PATH", help="item metadata (for LightFM's features)")
    tune.add_argument("--customers", metavar="PATH", help="customer attributes (for LightFM)")
    tune.add_argument("--config", metavar="FILE", help="starting TOML config")
    tune.add_argument("--out", required=True, metavar="FILE", help="where to write the config")
    tune.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        type=_tunable,
        help="default: the blend's parts (the blend's weights are tuned after them)",
    )
    tune.add_argument(
        "--trials",
        type=_positive,
        default=6,
        help="random draws per model (EASE and recent popularity: a grid)",
    )
    tune.add_argument("--weight-trials", type=_positive, default=6, help="draws of the weights")
    tune.add_argument("--on-bad-rows", choices=["skip", "reject"], default="skip")
    tune.set_defaults(command=_tune)

    gen = sub.add_parser("generate-sample-data", help="write a seeded omnichannel sample data set")
    gen.add_argument("--out", required=True, metavar="DIR")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--customers", type=int, default=2000)
    gen.add_argument("--items", type=int, default=800)
    gen.add_argument("--days", type=int, default=120)
    gen.add_argument("--format", choices=["csv", "parquet"], default="csv")
    gen.set_defaults(command=_generate)

    export = sub.add_parser(
        "export-events", help="drain the service's event stream into date-partitioned Parquet"
    )
    export.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        required=not os.environ.get("REDIS_URL"),
        help="the service's Redis (default: $REDIS_URL)",
    )
    export.add_argument(
        "--out", required=True, metavar="DIR", help="the Parquet folder training reads"
    )
    export.add_argument(
        "--prefix", default=os.environ.get("RECO_KEY_PREFIX", "reco"), help="Redis key prefix"
    )
    export.add_argument(
        "--default-personalisation",
        choices=("true", "false"),
        help="consent of customers who stated none, as the service's setting (default: "
        "$RECO_DEFAULT_PERSONALISATION or $DEFAULT_PERSONALISATION, else true): with false, "
        "their events are not exported",
    )
    export.add_argument("--group", default="exporter", help="consumer group name")
    export.add_argument("--consumer", help="this exporter's name (default: host-pid)")
    export.add_argument("--batch", type=int, default=5000, help="events per batch")
    export.add_argument(
        "--claim-idle-seconds",
        type=float,
        default=60.0,
        help="take over batches of an exporter silent this long (it crashed)",
    )
    export.set_defaults(command=_export)

    pr = sub.add_parser(
        "prune", help="remove all but the newest model versions and LATEST's from a model folder"
    )
    pr.add_argument("--model-dir", required=True, metavar="DIR")
    pr.add_argument(
        "--keep",
        type=_positive,
        default=DEFAULT_KEEP,
        metavar="N",
        help=f"versions to keep besides LATEST's (default {DEFAULT_KEEP})",
    )
    pr.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    pr.set_defaults(command=_prune)

    boot = sub.add_parser("bootstrap", help="sample data and a first model, only where missing")
    boot.add_argument("--data-dir", required=True, metavar="DIR")
    boot.add_argument("--model-dir", required=True, metavar="DIR")
    boot.add_argument("--seed", type=int, default=7)
    boot.set_defaults(command=_bootstrap)
    return parser


if __name__ == "__main__":
    sys.exit(main())
