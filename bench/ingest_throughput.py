"""Ingest throughput: Strata vs gitingest (PyPI) vs repomix (npm) on the same text file set.

    .venv/bin/python bench/ingest_throughput.py REPO [--model DIR] [--runs 3] [--json OUT]

REPO is a repository checkout. The text file set is what Strata includes from REPO by default,
copied without ignore files to a staging directory; each tool runs once there and the set is
cut to the files all three tools emit, so every tool is timed on exactly the same files. Each
command line then runs `--runs` times (process start included) and the median wall time is kept.
Two more rows time `build_prompt` inside this process (a long-lived server or job worker: no
interpreter start, imports or tokenizer load). Tokens/s uses Strata's token count of the set
for every tool: the same material per second.

Needs: gitingest in the virtualenv (`pip install gitingest`) and repomix (`npm install repomix`;
set REPOMIX=/path/to/node_modules/.bin/repomix or have `repomix` on PATH). Without --model the
demo tokenizer (runtime.demo.build_tokenizer) is used; ingest itself needs no weights.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HUGE_BUDGET = 1 << 40
IGNORE_FILES = {
    ".gitignore",
    ".gitattributes",
    ".npmignore",
    ".dockerignore",
    ".agignore",
    ".ignore",
    ".repomixignore",
    ".gitingestignore",
}  # the set is measured whole, never degraded


def demo_model_dir(out: Path) -> Path:
    """config.json + tokenizer.json of the demo model (no weights: ingest needs none)."""
    from runtime.demo import build_tokenizer, demo_config

    tok = build_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "config.json").write_text(json.dumps(demo_config(tok.get_vocab_size())))
    return out


def strata_files(repo: Path, model: Path) -> list[str]:
    """Relative paths of the text files Strata includes from the repository."""
    from ingest import IngestOptions, Target, build_prompt

    prompt = build_prompt([repo], Target.from_model_dir(model), HUGE_BUDGET, IngestOptions(use_cache=False))
    name = repo.resolve().name
    return sorted(i.path[len(name) + 1 :] for i in prompt.ledger if i.kind == "file" and i.status == "included")


def stage(repo: Path, rels: list[str], dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for rel in rels:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / rel, target)


def _run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds


def tools(stage_dir: Path, work: Path, model: Path) -> dict[str, list[str]]:
    """Command lines, all run from `work` and writing only under it."""
    repomix = os.environ.get("REPOMIX") or shutil.which("repomix") or "repomix"
    strata = [sys.executable, "-c", "import sys; from strata.cli import main; sys.exit(main())"]
    common = ["ingest", str(stage_dir), "--model", str(model), "--json", "--budget", str(HUGE_BUDGET)]
    return {
        "strata (no cache)": [*strata, *common, "--no-cache"],
        "strata (warm cache)": [*strata, *common, "--cache-dir", str(work / "extracts")],
        "gitingest": [sys.executable, "-m", "gitingest", str(stage_dir), "-o", str(work / "gitingest.txt")],
        "repomix": [repomix, str(stage_dir), "-o", str(work / "repomix.xml"), "--quiet"],
    }


def emitted(work: Path, stage_dir: Path) -> dict[str, set[str]]:
    """Files each competitor put in its output."""
    gi = (work / "gitingest.txt").read_text(errors="replace")
    rm = (work / "repomix.xml").read_text(errors="replace")
    return {
        "gitingest": set(re.findall(r"^FILE: (.+)$", gi, re.M)),
        "repomix": set(re.findall(r'^<file path="([^"]+)">$', rm, re.M)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("repo", type=Path)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    try:
        return _bench(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, work: Path) -> int:
    model = args.model or demo_model_dir(work / "model")
    stage_dir = work / args.repo.resolve().name
    # Ignore files are left out of the set: each tool would apply them to the staged copy
    # (gitingest then emits a varying subset), and the set must be the same for all.
    rels = [r for r in strata_files(args.repo, model) if Path(r).name not in IGNORE_FILES]
    stage(args.repo, rels, stage_dir)
    cmds = tools(stage_dir, work, model)
    for name in ("gitingest", "repomix"):
        _run(cmds[name], work)
    common = set(rels)
    for files in emitted(work, stage_dir).values():
        common &= files
    rels = sorted(common)
    stage(args.repo, rels, stage_dir)
    for name in ("gitingest", "repomix"):
        _run(cmds[name], work)
    counts = {k: len(v) for k, v in emitted(work, stage_dir).items()}
    assert all(n == len(rels) for n in counts.values()), (len(rels), counts)
    _run(cmds["strata (warm cache)"], work)  # fill the cache once
    proc = subprocess.run(cmds["strata (no cache)"], cwd=work, capture_output=True, text=True, check=True)
    report = json.loads(proc.stdout)
    tokens = report["tokens"]
    size = sum((stage_dir / r).stat().st_size for r in rels)
    # Interleaved runs: load from other processes on the machine hits every tool alike.
    timers = {name: (lambda cmd=cmd: _run(cmd, work)) for name, cmd in cmds.items()}
    timers.update(_lib_timers(stage_dir, model, work, tokens))
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.runs):
        for name, timer in timers.items():
            times[name].append(timer())
    rows = []
    for name, samples in times.items():
        t = statistics.median(samples)
        rows.append(
            {
                "tool": name,
                "seconds": round(t, 3),
                "files_per_s": round(len(rels) / t),
                "tokens_per_s": round(tokens / t),
                "mb_per_s": round(size / t / 1e6, 2),
            }
        )
    best_other = min(r["seconds"] for r in rows if not r["tool"].startswith("strata"))
    for r in rows:
        r["speedup_vs_fastest_other"] = round(best_other / r["seconds"], 2)
    result = {
        "repo": str(args.repo),
        "files": len(rels),
        "bytes": size,
        "tokens": tokens,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),  # other work on the machine skews all rows
        "rows": rows,
    }
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _lib_timers(stage_dir: Path, model: Path, work: Path, tokens: int) -> dict:
    """build_prompt timed inside this process: cold (a fresh cache each run) and warm."""
    from ingest import IngestOptions, Target, build_prompt

    target = Target.from_model_dir(model)
    warm = IngestOptions(cache_dir=work / "lib-warm")
    build_prompt([stage_dir], target, HUGE_BUDGET, warm)
    runs = iter(range(1 << 30))

    def once(options: IngestOptions) -> float:
        start = time.perf_counter()
        prompt = build_prompt([stage_dir], target, HUGE_BUDGET, options)
        seconds = time.perf_counter() - start
        assert len(prompt) == tokens  # the same material as the command-line rows
        return seconds

    return {
        "strata lib (cold)": lambda: once(IngestOptions(cache_dir=work / f"lib-cold-{next(runs)}")),
        "strata lib (warm)": lambda: once(warm),
    }


def _print(result: dict) -> None:
    print(
        f"{result['repo']}: {result['files']} text files, {result['bytes'] / 1e6:.1f} MB, "
        f"{result['tokens']:,} tokens; median of {result['runs']} interleaved runs, {result['cpus']} CPUs, "
        f"load average {result['loadavg_1m_after']}"
    )
    head = f"| {'tool':<20} | {'seconds':>8} | {'files/s':>8} | {'tokens/s':>10} | {'MB/s':>6} |"
    print(head + " vs fastest other |")
    print(f"|{'-' * 22}|{'-' * 10}|{'-' * 10}|{'-' * 12}|{'-' * 8}|{'-' * 18}|")
    for r in result["rows"]:
        print(
            f"| {r['tool']:<20} | {r['seconds']:>8.3f} | {r['files_per_s']:>8,} | {r['tokens_per_s']:>10,} "
            f"| {r['mb_per_s']:>6.2f} | {r['speedup_vs_fastest_other']:>15.2f}x |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
