"""`strata worker --model DIR [--concurrency N]`: a Celery worker that runs the jobs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker", help="run a jobs worker (Redis when STRATA_REDIS_URL is set, else files under STRATA_HOME)",
        description="Concurrency is in processes; each loads its own engine and answers one document "
                    "at a time, so N processes hold N copies of the model and split the cores.")
    p.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: STRATA_MODEL)")
    p.add_argument("--weights", choices=("auto", "fp8", "bf16", "fp32"), default=None,
                   help="weight format (default: STRATA_WEIGHTS, auto)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="worker processes (default: STRATA_JOBS_CONCURRENCY, 1)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--name", default=None, help="Celery node name (default: strata-<random>@<host>)")
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # exit with the server
    p.set_defaults(handler=worker_command)


def worker_command(args: argparse.Namespace) -> int:
    import os

    from jobs.worker import run_worker
    from strata.settings import get_settings

    if args.weights:
        os.environ["STRATA_WEIGHTS"] = args.weights  # the pool processes read it when they load the engine
        get_settings.cache_clear()

    run_worker(args.model, args.concurrency, args.loglevel, args.name, args.parent_pid)
    return 0
