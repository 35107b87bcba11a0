"""A writer killed with SIGKILL at random moments never leaves a store that serves bad pages."""

from __future__ import annotations

import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from kvstore.lmdb_store import LMDBStore
from tests.kvstore.workers import page

MiB = 1 << 20
ROOT_DIR = Path(__file__).resolve().parents[2]
ROUNDS = 20
CAPACITY = 2 * MiB  # small, so kills also land inside evictions and map growth


def _kill_a_writer(path: Path, start: int, rng: random.Random) -> None:
    cmd = [sys.executable, "-m", "tests.kvstore.workers", "write", str(path)]
    child = subprocess.Popen(
        [*cmd, str(start), "-1", str(CAPACITY), "4"], cwd=ROOT_DIR, stdout=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready and child.stdout.readline().strip() == "ready", "writer did not start"
        time.sleep(rng.uniform(0.0, 0.08))
        assert child.poll() is None, "writer died before it was killed"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


def test_sigkill_while_writing_leaves_a_verifiable_store(tmp_path: Path) -> None:
    rng = random.Random(20261128)
    served = 0
    for round_ in range(ROUNDS):
        start = round_ * 100_000
        _kill_a_writer(tmp_path, start, rng)
        store = LMDBStore(tmp_path, CAPACITY, initial_map_bytes=1 * MiB)
        report = store.verify()
        assert report["corrupt"] == 0 and report["orphans"] == 0 and report["stale_lru"] == 0
        assert report["charged_bytes"] == store.stats()["bytes"] <= CAPACITY
        for i in range(start, start + 2000):
            key, digest, payload, summary = page(i)
            got = store.get(key, digest)
            if got is not None:
                assert got == payload and store.get_summary(key) == summary
                served += 1
        store.close()
    assert served > 0, "no writer got far enough to store a page: the test proved nothing"
