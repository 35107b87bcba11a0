"""`strata cache stats|verify|clear`: look after the persistent KV page store."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvstore.maintenance import cache_clear, cache_stats, cache_verify
from strata.cli import emit_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="Inspect, verify or clear the KV page store")
    sub = parser.add_subparsers(dest="cache_command", required=True)
    commands = (
        ("stats", _stats, "Entries, bytes and limits of the store"),
        ("verify", _verify, "Check every stored page; exit 1 when some fail and were kept"),
        ("clear", _clear, "Remove every stored page (an unreadable store's files are deleted)"),
    )
    for name, handler, text in commands:
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--path", type=Path, default=None, help="store directory (STRATA_HOME/lmdb)")
        cmd.add_argument("--json", action="store_true", help="print one JSON object")
        cmd.add_argument("--redis", action="store_true", help="also the shared Redis tier (STRATA_KV_REDIS_URL)")
        if name == "verify":
            cmd.add_argument("--repair", action="store_true", help="drop what fails the checks")
        cmd.set_defaults(handler=handler)


def _stats(args: argparse.Namespace) -> int:
    report = cache_stats(path=args.path, redis=args.redis)
    _emit(args, report)
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = cache_verify(path=args.path, repair=args.repair, redis=args.redis)
    _emit(args, report)
    bad = sum(
        part.get("corrupt", 0) + part.get("stale", 0) + part.get("orphans", 0)
        for part in (report.get("lmdb", {}), report.get("redis", {}))
    )
    return 0 if args.repair or bad == 0 else 1


def _clear(args: argparse.Namespace) -> int:
    _emit(args, cache_clear(path=args.path, redis=args.redis))
    return 0


def _emit(args: argparse.Namespace, report: dict) -> None:
    if args.json:
        emit_json(report)
        return
    print(f"store: {report['path']}")
    for tier in ("lmdb", "redis"):
        if tier in report:
            fields = ", ".join(f"{k}={v}" for k, v in report[tier].items() if k != "path")
            print(f"{tier}: {fields}")
