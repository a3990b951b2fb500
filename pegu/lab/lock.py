"""One writer per sweep folder: a sweep (its worker processes, a resume, a notebook sweep)
holds ``OUT/.pegu-sweep.lock`` while it writes; a second sweep on the same folder is
refused, naming the holder. The lock is the kernel's (``flock``): it ends with the process
that holds it, so the lock of a killed sweep is taken over safely by the next one."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path

from ..core.errors import PeguError
from ..core.images import process_alive

try:
    import fcntl
except ImportError:  # no flock here (Windows): no lock
    fcntl = None

LOCK_NAME = ".pegu-sweep.lock"
# how a sweep's worker processes know they work for the holder (set in their environment
# by the process that starts them, never in this process's)
TOKEN_ENV = "PEGU_SWEEP_LOCK"


class FolderBusy(PeguError, BlockingIOError):
    """Another live sweep is writing into the folder."""


def _holder(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def writer_lock(out, what: str = "pegu sweep", shared: str | None = None):
    """Hold ``out``'s writer lock within the block; yields the token worker processes get
    (in ``TOKEN_ENV``) to work under it. shared: for a shard started on its own
    (``--shard``, ``accelerate launch``), its sweep's grid digest: shards of one grid share
    the folder; a whole sweep, or shards of another grid, are refused. FolderBusy, naming
    the holder, when another live process holds it. Where the platform has no ``flock``
    (Windows) the folder is not locked."""
    out = Path(out)
    path = out / LOCK_NAME
    given = os.environ.get(TOKEN_ENV)
    if given and given == _holder(path).get("token"):
        yield given  # a worker of the holder
        return
    if fcntl is None:
        yield None
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        token = secrets.token_hex(8)
        info = {"token": token, "pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what,
                "command": " ".join(sys.argv)[:300]}
        if shared:
            _join_shards(fd, path, out, dict(info, what="sweep shards (--shard)",
                                                    token=None, grid=shared))
        else:
            _take(fd, fcntl.LOCK_EX, path, out)
            _record(fd, info)
        yield token
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _take(fd: int, how: int, path: Path, out: Path) -> None:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        h = _holder(path)
        who = (f"{h.get('what', 'a sweep')} (process {h['pid']} on {h.get('host', '?')}, "
               f"since {h.get('since', '?')})" if process_alive(h.get("pid")) and
               h.get("host") == socket.gethostname() else "sweep shards (--shard)")
        raise FolderBusy(f"{out} is being written by {who}; wait for it to end, or give "
                         "this sweep another --out") from None


def _record(fd: int, info: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def _join_shards(fd: int, path: Path, out: Path, info: dict) -> None:
    """A shard's shared hold: the first shard in records its grid, later ones must be of
    that grid. Shards enter one at a time (a second, briefly held lock), so that the
    first one's record is there before the next one reads it."""
    gate = os.open(out / (LOCK_NAME + ".gate"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # others write here: their record stands
        else:  # nobody writes here: this shard's grid is the folder's
            _record(fd, info)
        _take(fd, fcntl.LOCK_SH, path, out)  # (from exclusive: converted)
        held = _holder(path).get("grid")
        if held != info["grid"]:
            raise FolderBusy(f"{out} is being written by shards of another grid; wait for "
                             "them to end, or give this sweep another --out")
    finally:
        os.close(gate)
