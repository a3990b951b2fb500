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
def writer_lock(out, what: str = "pegu sweep", shared: bool = False):
    """Hold ``out``'s writer lock within the block; yields the token worker processes get
    (in ``TOKEN_ENV``) to work under it. shared: a shard started on its own (``--shard``,
    ``accelerate launch``): shards of one sweep share the folder, a whole sweep excludes
    them. FolderBusy, naming the holder, when another live process holds it. Where the
    platform has no ``flock`` (Windows) the folder is not locked."""
    out = Path(out)
    path = out / LOCK_NAME
    given = os.environ.get(TOKEN_ENV)
    if given and given == _holder(path).get("token"):
        yield given  # a worker of the holder
        return
    try:
        import fcntl
    except ImportError:  # no flock here: no lock
        yield None
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(path)
            who = (f"{h.get('what', 'a sweep')} (process {h['pid']} on {h.get('host', '?')}, "
                   f"since {h.get('since', '?')})" if process_alive(h.get("pid")) and
                   h.get("host") == socket.gethostname() else "sweep shards (--shard)")
            raise FolderBusy(f"{out} is being written by {who}; wait for it to end, or give "
                             "this sweep another --out") from None
        token = secrets.token_hex(8)
        if not shared:
            info = {"token": token, "pid": os.getpid(), "host": socket.gethostname(),
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what,
                    "command": " ".join(sys.argv)[:300]}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield token
    finally:
        os.close(fd)  # closing the descriptor releases the lock
