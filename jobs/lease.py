"""Leases: who is working on one document of a job, so a dead worker's document is found and redone.

A lease is a small JSON file (state, task id, host, pid); its mtime is the heartbeat. It is stale
when it has not beaten for `ttl` seconds, or at once when its process is on this host and gone.
States: "reserved" (a worker received the task), "running" (a process is answering), "retrying"
(a transient error; the retry may take over). Writes race only benignly: results are write-once.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = socket.gethostname()


@dataclass(slots=True)
class Lease:
    state: str
    task_id: str
    host: str
    pid: int
    beat: float  # last heartbeat (the file's mtime)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Leases:
    """The leases of one job's documents, in one directory."""

    def __init__(self, folder: Path, ttl: float) -> None:
        self.folder, self.ttl = folder, ttl

    def _path(self, doc: int) -> Path:
        return self.folder / str(doc)

    def read(self, doc: int) -> Lease | None:
        path = self._path(doc)
        try:
            raw = json.loads(path.read_bytes())
            beat = path.stat().st_mtime
        except (FileNotFoundError, ValueError):
            return None
        return Lease(raw["state"], raw["task_id"], raw["host"], int(raw["pid"]), beat)

    def stale(self, lease: Lease) -> bool:
        if time.time() - lease.beat > self.ttl:
            return True
        return lease.host == HOST and not _pid_alive(lease.pid)

    def _write(self, doc: int, state: str, task_id: str) -> None:
        body = json.dumps({"state": state, "task_id": task_id, "host": HOST, "pid": os.getpid()}).encode()
        tmp = self.folder / f".{doc}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(body)
        os.replace(tmp, self._path(doc))

    def reserve(self, doc: int, task_id: str) -> bool:
        """A worker received the task: note it unless someone live already holds the document."""
        held = self.read(doc)
        if held is not None and not self.stale(held):
            return False
        self._write(doc, "reserved", task_id)
        return True

    def claim(self, doc: int, task_id: str) -> bool:
        """Start answering: refused only while another live process is running this document."""
        held = self.read(doc)
        if held is not None and held.state == "running" and not self.stale(held):
            if not (held.host == HOST and held.pid == os.getpid()):
                return False
        self._write(doc, "running", task_id)
        return True

    def mark_retrying(self, doc: int, task_id: str) -> None:
        self._write(doc, "retrying", task_id)

    def release(self, doc: int) -> None:
        self._path(doc).unlink(missing_ok=True)

    def take_stale(self, doc: int) -> bool:
        """For the sweeper: remove a stale lease; True for the one caller whose rename won."""
        held = self.read(doc)
        if held is None or not self.stale(held):
            return False
        try:
            os.rename(self._path(doc), self.folder / f".{doc}.{uuid.uuid4().hex}.dead")
        except FileNotFoundError:
            return False
        for dead in self.folder.glob(f".{doc}.*.dead"):
            dead.unlink(missing_ok=True)
        return True

    @contextmanager
    def heartbeat(self, doc: int) -> Iterator[None]:
        """Touch the lease every ttl/4 seconds while the body runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl / 4):
                try:
                    os.utime(self._path(doc))
                except FileNotFoundError:
                    return

        thread = threading.Thread(target=beat, name=f"lease-{doc}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
