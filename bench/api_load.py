"""Load on a real `strata serve`: concurrent asks on one cached document, then past the queue bound.

Phase 1 sends CONCURRENCY asks at once (within the queue bound): every one must succeed, and
all but the first see the document's pages in the cache. Phase 2 sends more than the bound at
once: the excess must get 429 + Retry-After at once, never a timeout. Prints one table.

    .venv/bin/python bench/api_load.py                      # tiny test model in a temp dir
    .venv/bin/python bench/api_load.py --model DIR --concurrency 32 --queue-depth 48 --burst 96
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-bench-0123456789abcdef"


@dataclass
class Phase:
    name: str
    concurrency: int
    codes: list[int] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)  # of the 200s
    reject_s: list[float] = field(default_factory=list)  # of the 429s
    ttft_s: list[float] = field(default_factory=list)
    prompt: int = 0
    cached: int = 0
    other_errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def row(self) -> list[str]:
        ok = self.codes.count(200)
        lat = sorted(self.latency_s) or [0.0]
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        hit = self.cached / self.prompt if self.prompt else 0.0
        ttft = statistics.median(self.ttft_s) * 1000 if self.ttft_s else 0.0
        rejected = f"{max(self.reject_s):.2f}" if self.reject_s else "-"
        return [self.name, str(self.concurrency), str(ok), str(self.codes.count(429)),
                str(len(self.codes) - ok - self.codes.count(429) + len(self.other_errors)),
                f"{statistics.median(lat):.2f}", f"{p95:.2f}", f"{ttft:.1f}", f"{hit:.1%}",
                rejected, f"{self.wall_s:.2f}",
                f"{ok / self.wall_s:.1f}" if self.wall_s else "-"]


HEADER = ["phase", "concurrent", "200", "429", "errors", "200 p50 s", "200 p95 s", "ttft p50 ms",
          "cache hit", "429 max s", "wall s", "ok/s"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, home: Path, queue_depth: int, max_tokens: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env.update(STRATA_HOME=str(home), STRATA_API_KEYS=json.dumps({KEY: "bench"}), PYTHONPATH=str(REPO),
               STRATA_QUEUE_DEPTH=str(queue_depth), STRATA_MAX_TOKENS_PER_REQUEST=str(max_tokens),
               STRATA_REQUEST_TIMEOUT_S="300")
    cmd = [sys.executable, "-c", "from strata.cli import main; raise SystemExit(main())", "serve",
           "--model", str(model), "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


async def one(client: httpx.AsyncClient, doc: str, body: dict, phase: Phase) -> None:
    t0 = time.perf_counter()
    try:
        r = await client.post(f"/v1/documents/{doc}/ask", json=body)
    except httpx.HTTPError as exc:  # a timeout or a dropped connection: exactly what must not happen
        phase.other_errors.append(type(exc).__name__)
        return
    phase.codes.append(r.status_code)
    (phase.latency_s if r.status_code == 200 else phase.reject_s).append(time.perf_counter() - t0)
    if r.status_code == 200:
        usage = r.json()["usage"]
        phase.prompt += usage["prompt_tokens"]
        phase.cached += usage["cached_tokens"]
        phase.ttft_s.append(r.json()["timings"]["ttft_s"])
    elif r.status_code == 429:
        assert int(r.headers["retry-after"]) >= 1


async def burst(url: str, doc: str, n: int, name: str, max_tokens: int) -> Phase:
    phase = Phase(name, n)
    body = {"question": "Which bucket holds record 70?", "max_tokens": max_tokens}
    limits = httpx.Limits(max_connections=n + 4)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                                 timeout=httpx.Timeout(120.0), limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client, doc, body, phase) for _ in range(n)))
        phase.wall_s = time.perf_counter() - t0
    return phase


def material() -> bytes:
    return "".join(f"bench note {i}: the service keeps record {i * 7} in bucket {i % 5}.\n"
                   for i in range(80)).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: tiny test model)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--queue-depth", type=int, default=48)
    ap.add_argument("--burst", type=int, default=128, help="asks sent at once in phase 2 (> queue depth)")
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        model = args.model
        if model is None:
            sys.path.insert(0, str(REPO))
            from tests.runtime.model1_tiny import write_tiny_model1

            model = write_tiny_model1(Path(tmp) / "tiny-model1")
        proc, url = start(model, Path(tmp) / "home", args.queue_depth, args.max_tokens)
        try:
            headers = {"Authorization": f"Bearer {KEY}"}
            doc = httpx.post(f"{url}/v1/documents", headers=headers, timeout=300,
                             files=[("files", ("notes.txt", material()))]).json()
            warm = asyncio.run(burst(url, doc["id"], 1, "warm-up (cold)", args.max_tokens))
            within = asyncio.run(burst(url, doc["id"], args.concurrency, "within bound", args.max_tokens))
            over = asyncio.run(burst(url, doc["id"], args.burst, "over bound", args.max_tokens))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"model {model.name}, document {doc['tokens']} tokens, queue_depth {args.queue_depth}, "
          f"max_tokens {args.max_tokens}")
    rows = [HEADER] + [p.row() for p in (warm, within, over)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for r in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    failed = within.codes.count(200) != args.concurrency or over.other_errors or within.other_errors
    if failed or 429 not in over.codes:
        raise SystemExit("FAILED: errors within the bound, timeouts, or no 429 past it")


if __name__ == "__main__":
    main()
