"""One LMDB environment shared safely by threads and processes, with a map that grows on demand.

LMDB gives one writer at a time across processes and lock-free readers. What it leaves to us:
the map size. A full map (MapFullError) is grown here, up to a hard cap; a map grown by another
process (MapResizedError) is adopted with set_mapsize(0). LMDB allows set_mapsize only while this
process has no transaction open, so every transaction holds a shared lock and a resize an
exclusive one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import lmdb

from strata.errors import StoreError

T = TypeVar("T")
MiB = 1 << 20
DB_NAMES = ("pages", "summaries", "access", "lru", "meta")
_WAY_OUT = "run `strata cache verify --repair` or `strata cache clear`"
_RETRIES = 8


class MapAtCap(Exception):
    """The map is full and already at its hard cap: the caller must free space."""


class _SharedLock:
    """Many holders of the shared side, or one of the exclusive side (a readers-writer lock)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0

    def acquire_shared(self) -> None:
        with self._cond:
            self._shared += 1

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            if not self._shared:
                self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._shared == 0)
            yield


@dataclass(slots=True)
class _Shared:
    """One open environment per directory per process: LMDB forbids opening it twice."""

    env: lmdb.Environment
    dbs: dict
    lock: _SharedLock
    pid: int
    refs: int = 0


_REGISTRY: dict[str, _Shared] = {}
_REGISTRY_LOCK = threading.Lock()


class LMDBEnv:
    """An open LMDB environment with the named sub-databases of the page store."""

    def __init__(self, path: Path, initial_map: int, max_map: int, max_readers: int = 126, sync: bool = True) -> None:
        self.path = Path(path)
        self.max_map = max(max_map, initial_map)
        self._initial = initial_map
        self._max_readers = max_readers
        self._sync = sync
        self._closed = False
        self._shared = self._attach()

    @property
    def env(self) -> lmdb.Environment:
        return self._shared.env

    @property
    def dbs(self) -> dict:
        return self._shared.dbs

    @property
    def _lock(self) -> _SharedLock:
        return self._shared.lock

    def _attach(self) -> _Shared:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"KV store at {self.path} cannot be created ({exc})") from None
        name = str(self.path.resolve())
        with _REGISTRY_LOCK:
            shared = _REGISTRY.get(name)
            if shared is not None and shared.pid != os.getpid():
                # Inherited through fork: py-lmdb refuses a second open while the parent's handle
                # object lives. Closing it here unmaps the child's copy only; fcntl locks and
                # reader slots belong to the parent's pid and stay untouched.
                shared.env.close()
                shared = None
            if shared is None:
                env, dbs = self._open()
                shared = _REGISTRY[name] = _Shared(env, dbs, _SharedLock(), os.getpid())
            shared.refs += 1
        return shared

    def _open(self) -> tuple[lmdb.Environment, dict]:
        try:
            data = self.path / "data.mdb"
            existing = data.stat().st_size if data.exists() else 0
            # Open with at least the file's size so every process maps the same range.
            map_size = min(max(self._initial, _round_up(existing, MiB)), max(self.max_map, existing))
            env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(DB_NAMES) + 2,
                max_readers=self._max_readers,
                lock=True,
                subdir=True,
                readahead=False,
                sync=self._sync,
                metasync=False,
            )
            _check_not_truncated(env, self.path)
            dbs = _open_dbs(env)
            # Reader slots of killed processes pin old pages; free them before they grow the file.
            env.reader_check()
        except (lmdb.Error, OSError) as exc:
            raise StoreError(f"KV store at {self.path} cannot be opened ({exc}); {_WAY_OUT}") from None
        return env, dbs

    @property
    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def read(self) -> _Reader:
        """A read transaction whose values are zero-copy buffers, valid only inside the block."""
        return _Reader(self)

    def _begin_read(self) -> lmdb.Transaction:
        """Begin a read transaction holding the shared lock (released by _Reader.__exit__)."""
        self._after_fork()
        for _ in range(_RETRIES):
            self._lock.acquire_shared()
            txn = None
            try:
                txn = self._begin(write=False)
            finally:
                if txn is None:
                    self._lock.release_shared()
            if txn is not None:
                return txn
            self._adopt_size()
        raise StoreError(f"KV store at {self.path}: map kept changing size")

    def write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """Run fn in a write transaction, growing the map and retrying when it fills.

        fn may run more than once (a failed transaction is rolled back whole), so it must only
        touch the transaction. Raises MapAtCap when the map cannot grow any further.
        """
        self._after_fork()
        for _ in range(_RETRIES):
            try:
                with self._lock.shared():
                    txn = self.env.begin(write=True, buffers=True)
                    try:
                        result = fn(txn)
                        txn.commit()
                        return result
                    except BaseException:
                        txn.abort()
                        raise
            except lmdb.MapFullError:
                if not self.grow():
                    raise MapAtCap() from None
            except lmdb.MapResizedError:
                self._adopt_size()
            except lmdb.Error as exc:
                raise StoreError(f"KV store at {self.path} failed a write ({exc}); {_WAY_OUT}") from None
        raise StoreError(f"KV store at {self.path}: map kept changing size during a write")

    def grow(self) -> bool:
        """Double the map (up to the cap); False when it is already at the cap."""
        with self._lock.exclusive():
            current = self.map_size
            if current >= self.max_map:
                return False
            self.env.set_mapsize(min(self.max_map, current * 2))
            return True

    def _begin(self, write: bool) -> lmdb.Transaction | None:
        """Begin a transaction; None when another process resized the map (adopt, then retry)."""
        try:
            return self.env.begin(write=write, buffers=True)
        except lmdb.MapResizedError:
            return None
        except lmdb.Error as exc:
            raise StoreError(f"KV store at {self.path} is unreadable ({exc}); {_WAY_OUT}") from None

    def _adopt_size(self) -> None:
        with self._lock.exclusive():
            self.env.set_mapsize(0)

    def _after_fork(self) -> None:
        # An LMDB handle must not be used in a forked child; the child opens its own.
        if self._shared.pid != os.getpid():
            self._shared = self._attach()

    def close(self) -> None:
        """Release this handle; the environment closes with the last one in the process."""
        shared = self._shared
        with _REGISTRY_LOCK:
            if self._closed:
                return
            self._closed = True
            shared.refs -= 1
            if shared.refs > 0 or shared.pid != os.getpid():
                return
            name = str(self.path.resolve())
            if _REGISTRY.get(name) is shared:
                del _REGISTRY[name]
        with shared.lock.exclusive():
            shared.env.close()


def _open_dbs(env: lmdb.Environment) -> dict:
    """The named sub-databases; adopts a map another process grew between our open and now."""
    for _ in range(_RETRIES):
        try:
            return {name: env.open_db(name.encode()) for name in DB_NAMES}
        except lmdb.MapResizedError:
            env.set_mapsize(0)  # nothing of ours is open yet: safe without the shared lock
    raise lmdb.MapResizedError("map kept changing size while opening")


def _check_not_truncated(env: lmdb.Environment, path: Path) -> None:
    """Refuse a data file shorter than its own last page: touching that page would be SIGBUS."""
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = file_bytes(path)
    if have < need:
        env.close()
        raise StoreError(f"KV store at {path} is truncated ({have} bytes, its pages need {need}); {_WAY_OUT}")


class _Reader:
    """The context of LMDBEnv.read(): a plain class, as reads are the hot path."""

    __slots__ = ("env", "txn")

    def __init__(self, env: LMDBEnv) -> None:
        self.env = env

    def __enter__(self) -> lmdb.Transaction:
        self.txn = self.env._begin_read()
        return self.txn

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            self.txn.abort()
        finally:
            self.env._lock.release_shared()
        if isinstance(exc, lmdb.Error):
            raise StoreError(f"KV store at {self.env.path} is unreadable ({exc}); {_WAY_OUT}") from None


def destroy(path: Path) -> list[str]:
    """Remove a store's files (even an unreadable one); returns the names removed."""
    removed = []
    for name in ("data.mdb", "lock.mdb"):
        target = Path(path) / name
        if target.exists():
            target.unlink()
            removed.append(name)
    return removed


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def file_bytes(path: Path) -> int:
    """Size of the data file on disk (0 when absent)."""
    data = Path(path) / "data.mdb"
    return data.stat().st_size if data.exists() else 0
