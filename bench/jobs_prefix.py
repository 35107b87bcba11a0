"""One job of N questions over one document: wall time with the shared prefix vs with the cache off.

Each mode runs a real `strata worker` (embedded broker, a fresh STRATA_HOME) that is warmed up on
another document first, so engine load and first-call costs are not counted. The job's questions
run in a row on one worker; with the prefix cache on, the document is prefilled once and every
later question restores its pages (cached_tokens), with it off every question prefills it again.

    .venv/bin/python bench/jobs_prefix.py                         # the tiny test model
    .venv/bin/python bench/jobs_prefix.py --model demo-model --budget 4096
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_mode(model: Path, document: Path, warmup: Path, questions: list[str], cache: bool,
             args: argparse.Namespace, tmp: Path) -> dict:
    from jobs.service import results, status, submit
    from jobs.spec import make_spec
    from jobs.worker import spawn_worker, stop_worker
    from strata.settings import get_settings

    home = tmp / ("cache-on" if cache else "cache-off")
    env = {"STRATA_HOME": str(home), "STRATA_CACHE": "true" if cache else "false", "STRATA_JOBS_POLL_S": "0.02",
           "STRATA_THREADS": str(args.threads)}
    os.environ.update(env)
    os.environ.pop("STRATA_REDIS_URL", None)
    get_settings.cache_clear()
    home.mkdir(parents=True)  # fresh: the first question of each run prefills from scratch
    worker = spawn_worker(model, 1, env=env, log=home / "worker.log")
    try:
        def run(source: Path, qs: list[str]) -> tuple[float, list[dict]]:
            spec = make_spec([str(source)], None, qs, max_new_tokens=args.max_new_tokens, budget=args.budget)
            start = time.perf_counter()
            job_id = submit(spec)
            while status(job_id, tasks=False)["state"] != "done":
                if worker.poll() is not None:
                    raise RuntimeError((home / "worker.log").read_text()[-3000:])
                time.sleep(0.01)
            return time.perf_counter() - start, results(job_id)

        run(warmup, questions[:2])
        wall, items = run(document, questions)
    finally:
        stop_worker(worker)
    failed = [i for i in items if i.get("error")]
    if failed:
        raise RuntimeError(f"{len(failed)} items failed: {failed[0]['error']}")
    usage = [i["usage"] for i in items]
    return {"wall_s": wall, "prompt_tokens": usage[0]["prompt_tokens"],
            "engine_s": sum(i["timings"]["total_s"] for i in items),
            "cached": sum(u["cached_tokens"] for u in usage),
            "ttft_first_s": items[0]["timings"]["ttft_s"],
            "ttft_rest_s": statistics.median(i["timings"]["ttft_s"] for i in items[1:])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the tiny test model)")
    parser.add_argument("--document", type=Path, default=REPO / "samples" / "repo")
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--budget", type=int, default=3072, help="material tokens of the document")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode; the table shows medians")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the worker")
    args = parser.parse_args()
    questions = [f"Question {i}: where is item {i} of this material handled?" for i in range(args.questions)]
    with tempfile.TemporaryDirectory(prefix="strata-bench-jobs-") as d:
        tmp = Path(d)
        model = args.model
        if model is None:
            from tests.runtime.model1_tiny import write_tiny_model1

            model = write_tiny_model1(tmp / "tiny-model1")
        warmup = tmp / "warmup.txt"
        warmup.write_text("A short note used to warm the worker up.\n")
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for n in range(args.rounds):  # interleaved, so load from elsewhere hits both modes alike
            for cache in (False, True):
                runs[cache].append(run_mode(model, args.document, warmup, questions, cache, args,
                                            tmp / f"round{n}"))
        rows = {cache: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for cache, rs in runs.items()}
    print(f"model {model.name if args.model else 'tiny MODEL1 (tests)'}; document {args.document} "
          f"({rows[True]['prompt_tokens']} prompt tokens); {args.questions} questions; "
          f"max_new_tokens {args.max_new_tokens}; {args.threads} worker thread(s) on {os.cpu_count()} cpus; "
          f"median of {args.rounds} rounds\n")
    print("| prefix cache | job wall (s) | sum of item time (s) | cached tokens (sum) | ttft first (s) "
          "| ttft median rest (s) |")
    print("|---|---|---|---|---|---|")
    for cache in (False, True):
        r = rows[cache]
        print(f"| {'on' if cache else 'off'} | {r['wall_s']:.2f} | {r['engine_s']:.2f} | {r['cached']:.0f} "
              f"| {r['ttft_first_s']:.3f} | {r['ttft_rest_s']:.3f} |")
    print(f"\nwall time, cache off / cache on: {rows[False]['wall_s'] / rows[True]['wall_s']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
