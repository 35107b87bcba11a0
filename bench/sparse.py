"""Sparse attention benchmark (issue 4) on the demo model.

quality   one context prefilled densely, then decoded dense and sparse side by side (teacher-forced):
          greedy top-1 agreement, and the share of dense attention mass on the selected pages
          (with the ceiling: the heaviest pages by true mass, as many as selected).
scale     per context length, in fresh processes and a fresh store: cold prefill + decode with
          sparse attention and tier budgets of ~10% of the full KV, then a warm question from a
          new process (prefix cached, a different question): TTFT, decode ms/token, peak
          resident KV by tier, peak RSS; dense decode too up to --dense-max.

    .venv/bin/python bench/sparse.py quality --length 32768 --steps 64 --budget 2048
    .venv/bin/python bench/sparse.py scale --lengths 8192 131072 1048576 --budget 2048
    .venv/bin/python bench/sparse.py --quick      # quality at 4K, scale at 8K
    .venv/bin/python bench/sparse.py tiled --lengths 1048576 --source-length 131072

tiled     decode cost at lengths whose cold prefill takes longer than a session on this machine:
          a real cold run at --source-length (a fresh store), whose stored pages are then copied,
          tiled, under the keys of a longer prompt; warm questions over that prefix from fresh
          processes, each after the store's files were read once (in the page cache). The KV is the
          model's own but at the wrong positions, so the tokens mean nothing: the row measures
          decode ms/token, TTFT and resident bytes of the real code path.

Each row is printed as JSON as soon as it is measured. The machine is shared: read ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTION = 32  # tokens after the shared prefix: the part that differs between questions
KV_SHARE = 0.045  # of the full KV bytes, for the device tier and again for the host tier
PAGE_BYTES = 64 * 4096  # a 64-token page of the demo model's KV (all layers)


def prompt_ids(n: int, vocab: int, question: int = 0) -> list[int]:
    import random

    rng = random.Random(n)
    prefix = [1] + [rng.randrange(16, vocab) for _ in range(n - 1)]
    ask = random.Random(1000 + question)
    return prefix + [ask.randrange(16, vocab) for _ in range(QUESTION)]


def demo_model(path: str | None) -> str:
    if path:
        return path
    out = Path(tempfile.gettempdir()) / "strata-bench-demo"
    if not (out / "config.json").exists():
        from runtime.demo import write_demo_model

        write_demo_model(out, weights="fp8", seed=0)
    return str(out)


def quality(model: str, length: int, steps: int, budget: int, radius_weight: float, timing: bool) -> dict:
    from runtime import Engine
    from runtime.sparse_quality import compare

    engine = Engine.from_pretrained(model, cache=False, attention_budget=0)
    ids = prompt_ids(length, engine.tokenizer.get_vocab_size())[:length]
    q = compare(engine, ids, steps, budget, radius_weight, timing)
    row = {"bench": "quality", "length": length, "budget": budget, "radius_weight": radius_weight,
           "steps": q.steps, "top1_agreement": round(q.agreement, 4), "selected_tokens": q.selected_tokens,
           "selected_share": round(q.selected_tokens / length, 4)}
    if timing:
        return {**row, "dense_decode_ms": round(q.dense_ms, 1), "sparse_decode_ms": round(q.sparse_ms, 1)}
    return {**row, "recall_mean": round(q.recall_mean, 4), "recall_p10": round(q.recall_p10, 4),
            "oracle_recall_mean": round(q.oracle_mean, 4)}


def one_run(model: str, home: str, n: int, budget: int, question: int, new_tokens: int) -> dict:
    """One generation in this (fresh) process; the tier budgets come from the environment."""
    import resource

    os.environ["STRATA_HOME"] = home
    from runtime import Engine, SamplingParams, fp8

    fp8.kernel_available()  # a first build, if any, is not part of the TTFT
    engine = Engine.from_pretrained(model, attention_budget=budget)
    ids = prompt_ids(n, engine.tokenizer.get_vocab_size(), question)
    out = engine.run(ids, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
    engine.close()
    tps = out.decode_tokens_per_s
    return {"prompt_tokens": out.prompt_tokens, "cached_tokens": out.cached_tokens,
            "ttft_s": round(out.ttft_s, 3), "decode_ms_per_token": round(1000 / tps, 1) if tps else None,
            "kv_peak_bytes": out.extra.get("kv_peak_bytes"), "fetched_pages": out.extra.get("fetched_pages"),
            "loaded_pages": out.extra.get("loaded_pages"), "loaded_layers": out.extra.get("loaded_layers"),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "token_ids": out.token_ids}


def share_kernels(home: str) -> None:
    """Point a fresh STRATA_HOME at one build of the C++ kernels (a build takes a minute)."""
    shared = Path(tempfile.gettempdir()) / "strata-bench-kernels"
    shared.mkdir(exist_ok=True)
    link = Path(home) / "torch_extensions"
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)


def in_subprocess(model: str, home: str, n: int, budget: int, question: int, new_tokens: int,
                  env: dict[str, str]) -> dict:
    share_kernels(home)
    code = (f"import json,sys; sys.path.insert(0, {str(ROOT)!r}); from bench.sparse import one_run; "
            f"print(json.dumps(one_run({model!r}, {home!r}, {n}, {budget}, {question}, {new_tokens})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env})
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def working_set(budget: int, layers: int = 8, kv_heads: int = 2) -> int:
    """Device-tier bytes for one decode step without refetching: the engine gives half the tier to
    single fetched layers (each layer's and head's selection) and half to whole pages (sink,
    window, a prefill chunk's pages)."""
    from runtime.engine import LAYER_CACHE_SHARE
    from runtime.sparse import SparsePolicy

    policy = SparsePolicy(budget, 64)
    fetched = layers * kv_heads * policy.max_pages * (PAGE_BYTES // layers)
    held = (policy.sink_pages + policy.local_pages + 512 // 64 + 4) * PAGE_BYTES
    return LAYER_CACHE_SHARE * max(fetched, held)


def scale(model: str, n: int, budget: int, new_tokens: int, dense: bool) -> dict:
    """The device tier holds a step's working set (else every step refetches it), or KV_SHARE of the
    full KV where that is larger; the host tier another KV_SHARE."""
    full_kv = (n + QUESTION) * 4096  # the demo model: 8 layers x 2 x 2 heads x 64 dims x bf16
    env = {"STRATA_KV_DEVICE_BYTES": str(max(working_set(budget), int(full_kv * KV_SHARE))),
           "STRATA_KV_HOST_BYTES": str(int(full_kv * KV_SHARE))}
    row: dict = {"bench": "scale", "length": n, "budget": budget, "full_kv_bytes": full_kv, **env}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as home:
        cold = in_subprocess(model, home, n, budget, 0, new_tokens, env)
        warm = in_subprocess(model, home, n, budget, 1, new_tokens, env)
        row["cold"] = {k: v for k, v in cold.items() if k != "token_ids"}
        row["warm"] = {k: v for k, v in warm.items() if k != "token_ids"}
        again = in_subprocess(model, home, n, budget, 0, new_tokens, env)
        row["warm_same_question_same_tokens"] = again["token_ids"] == cold["token_ids"]
        row["warm_same_question_cached_tokens"] = again["cached_tokens"]
    peak = cold["kv_peak_bytes"] or {}
    row["resident_share"] = round((peak.get("device", 0) + peak.get("host", 0)) / full_kv, 4)
    if dense:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as home:
            base = in_subprocess(model, home, n, 0, 0, new_tokens,
                                 {"STRATA_KV_DEVICE_BYTES": str(2 * full_kv), "STRATA_CACHE": "0"})
        row["dense"] = {k: v for k, v in base.items() if k != "token_ids"}
    return row


def tile_store(model: str, home: str, source: int, n: int) -> int:
    """Store the pages of prompt_ids(n)'s prefix as copies of prompt_ids(source)'s (already cached in
    `home`), page i from page i mod source pages. Returns the pages written."""
    os.environ["STRATA_HOME"] = home
    from runtime import Engine

    engine = Engine.from_pretrained(model, attention_budget=2048)
    cache, vocab = engine.cache, engine.tokenizer.get_vocab_size()
    assert cache is not None and cache.store is not None and cache.store.lmdb is not None
    lmdb = cache.store.lmdb
    have = cache.keys_for(prompt_ids(source, vocab)[:source], [], "")
    want = cache.keys_for(prompt_ids(n, vocab)[:n], [], "")
    payloads = lmdb.get_many(have.keys, have.digests)
    summaries = lmdb.get_summaries(have.keys)
    if any(p is None for p in payloads) or any(s is None for s in summaries):
        raise RuntimeError(f"the {source}-token source context is not fully cached in {home}")
    period = len(have.keys)
    for lo in range(0, len(want.keys), 256):
        lmdb.put_many([(want.keys[i], want.digests[i], payloads[i % period], summaries[i % period],
                        cache.codec.sections) for i in range(lo, min(lo + 256, len(want.keys)))])
    engine.close()
    return len(want.keys)


def read_through(home: str) -> None:
    """Read the store's files once, so the run after finds them in the page cache, as a machine with
    room for them would keep them (this VM evicts file pages within minutes even with RAM free)."""
    for path in sorted((Path(home) / "lmdb").glob("*.mdb")):
        with path.open("rb") as f:
            while f.read(1 << 22):
                pass


def tiled(model: str, lengths: list[int], source: int, budget: int, new_tokens: int) -> list[dict]:
    """One cold run at `source` tokens in a fresh store, then per length its pages tiled under that
    length's prompt and two warm questions from fresh processes."""
    def tiers(n: int) -> dict[str, str]:
        full = (n + QUESTION) * 4096
        return {"STRATA_KV_DEVICE_BYTES": str(max(working_set(budget), int(full * KV_SHARE))),
                "STRATA_KV_HOST_BYTES": str(int(full * KV_SHARE))}

    home = os.environ.get("BENCH_HOME") or tempfile.mkdtemp(dir=os.environ.get("BENCH_TMP"))
    cold = in_subprocess(model, home, source, budget, 0, new_tokens, tiers(source))
    rows = []
    for n in lengths:
        env = tiers(n)
        row: dict = {"bench": "tiled", "length": n, "source_length": source, "budget": budget,
                     "full_kv_bytes": (n + QUESTION) * 4096, **env,
                     "source_cold": {k: v for k, v in cold.items() if k != "token_ids"}}
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.sparse import tile_store; "
                f"print(tile_store({model!r}, {home!r}, {source}, {n}))")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, **env})
        for question in (1, 2):
            read_through(home)
            warm = in_subprocess(model, home, n, budget, question, new_tokens, env)
            row[f"warm{question}"] = {k: v for k, v in warm.items() if k != "token_ids"}
        peak = row["warm2"]["kv_peak_bytes"] or {}
        row["resident_share"] = round((peak.get("device", 0) + peak.get("host", 0)) / row["full_kv_bytes"], 4)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", choices=("quality", "scale", "tiled", "all"), default="all")
    parser.add_argument("--model", help="checkpoint directory (default: the demo model, written once)")
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--length", type=int, default=32768, help="quality: context length")
    parser.add_argument("--steps", type=int, default=64, help="quality: decode steps")
    parser.add_argument("--radius-weight", type=float, nargs="+", default=[1.0])
    parser.add_argument("--timing", action="store_true",
                        help="quality: time dense and sparse decode steps back to back (recall not measured)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 131072], help="scale: lengths")
    parser.add_argument("--new-tokens", type=int, default=16, help="scale: decode steps per run")
    parser.add_argument("--dense-max", type=int, default=32768, help="scale: dense decode up to this length")
    parser.add_argument("--source-length", type=int, default=131072, help="tiled: the real context tiled")
    parser.add_argument("--quick", action="store_true", help="quality at 4K over 16 steps, scale at 8K")
    args = parser.parse_args()
    if args.quick:
        args.length, args.steps, args.lengths = 4096, 16, [8192]
    model = demo_model(args.model)
    if args.part in ("quality", "all"):
        for weight in args.radius_weight:
            print(json.dumps(quality(model, args.length, args.steps, args.budget, weight, args.timing)), flush=True)
    if args.part in ("scale", "all"):
        for n in args.lengths:
            print(json.dumps(scale(model, n, args.budget, args.new_tokens, n <= args.dense_max)), flush=True)
    if args.part == "tiled":
        tiled(model, args.lengths, args.source_length, args.budget, args.new_tokens)


if __name__ == "__main__":
    main()
