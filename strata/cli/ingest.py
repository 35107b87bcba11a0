"""`strata ingest SOURCE... [--budget N] [--json]`: pack material into one prompt and report it."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from strata.cli import emit_json
from strata.errors import ConfigError

TOP_ITEMS = 10


def register(sub: argparse._SubParsersAction) -> None:
    """Add `strata ingest`."""
    p = sub.add_parser("ingest", help="ingest repositories, PDFs, images and videos into one prompt")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="directory, git checkout or file")
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="token budget (default: the model's context, up to 1,000,000)",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model directory with config.json and tokenizer.json (default: STRATA_MODEL)",
    )
    p.add_argument("--json", action="store_true", help="print the full ledger as one JSON object")
    for what in ("vendored", "generated", "lockfiles", "minified"):
        p.add_argument(f"--include-{what}", action="store_true", help=f"do not skip {what} files")
    p.add_argument("--max-file-bytes", type=int, default=None, help="skip text files above this size")
    p.add_argument("--tree-first", action="store_true", help="put the tree listing before the files")
    p.add_argument("--cache-dir", type=Path, default=None, help="extraction cache (default: HOME/extracts)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the extraction cache")
    p.set_defaults(handler=ingest)


def _options(args: argparse.Namespace):
    from ingest import IngestOptions

    extra = {} if args.max_file_bytes is None else {"max_file_bytes": args.max_file_bytes}
    return IngestOptions.from_settings(
        include_vendored=args.include_vendored,
        include_generated=args.include_generated,
        include_lockfiles=args.include_lockfiles,
        include_minified=args.include_minified,
        tree_first=args.tree_first,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        **extra,
    )


def ingest(args: argparse.Namespace) -> int:
    """Run one ingest and print its report (or the --json object)."""
    from ingest import Target, build_prompt
    from strata.settings import get_settings

    model = args.model or get_settings().model
    if model is None:
        raise ConfigError("no model: pass --model DIR or set STRATA_MODEL (ingest needs its tokenizer)")
    target = Target.from_model_dir(model)
    started = time.perf_counter()
    progress = not args.json and sys.stderr.isatty()
    prompt = build_prompt(args.sources, target, args.budget, _options(args), progress=progress)
    seconds = time.perf_counter() - started
    summary = prompt.summary()
    if args.json:
        emit_json(
            {
                "tokens": len(prompt),
                "budget": prompt.budget,
                "digest": prompt.digest(),
                "seconds": round(seconds, 3),
                "summary": summary,
                "stats": prompt.stats,
                "warnings": prompt.warnings,
                "ledger": [i.to_dict() for i in prompt.ledger],
            }
        )
        return 0
    _print_report(prompt, summary, seconds)
    return 0


def _print_report(prompt, summary: dict, seconds: float) -> None:
    kinds = ", ".join(f"{n} {k}" for k, n in summary["by_kind"].items())
    print(
        f"{summary['items']} items ({kinds}) -> {summary['tokens']:,} tokens "
        f"of a {summary['budget']:,} budget in {seconds:.2f}s; digest {prompt.digest()}"
    )
    parts = [f"{s} {n} ({summary['tokens_by_status'][s]:,} tokens)" for s, n in summary["by_status"].items() if n]
    print("ledger: " + ", ".join(parts))
    print(f"cache: {prompt.stats.get('cache_hits', 0)} hits, {prompt.stats.get('parsed', 0)} parsed")
    largest = sorted(prompt.ledger, key=lambda i: (-i.tokens, i.path))[:TOP_ITEMS]
    print("largest items:")
    for item in largest:
        print(f"  {item.tokens:>9,}  {item.status:<9}  {item.path}" + (f"  ({item.reason})" if item.reason else ""))
    left_out = [i for i in prompt.ledger if i.status in ("dropped", "error")]
    if left_out:
        print(f"left out ({len(left_out)}):")
        for item in left_out[:20]:
            print(f"  {item.status:<7}  {item.path}: {item.reason}")
        if len(left_out) > 20:
            print(f"  ... {len(left_out) - 20} more (see --json)")
    for warning in prompt.warnings:
        print(f"warning: {warning}", file=sys.stderr)
