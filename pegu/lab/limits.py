"""The limits a sweep keeps to: the space its images take, and on Kaggle the session's end.

Kaggle keeps 20 GB of output in ``/kaggle/working`` and ends a session after 12 hours (its
notebook documentation, "Technical specifications"): a sweep that would overflow the output
is refused before it starts, with its estimate, and a sweep stops starting runs when the
next would end after the session, its finished rows kept for :func:`earlier_rows` to carry
into the next session.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from ..core.errors import BadInput
from ..sources.kaggle import attached_inputs, on_kaggle

WORKING_LIMIT = 20 * 10**9  # bytes of output Kaggle keeps from /kaggle/working
SESSION_HOURS = 12  # a Kaggle session's longest run
MARGIN_S = 15 * 60  # stop this long before the session's end: tables, plots, saving
WORKING_ENV = "PEGU_KAGGLE_WORKING"  # tests and the simulation point /kaggle/working elsewhere


def working_root() -> Path:
    """Kaggle's saved output folder: ``/kaggle/working``, or ``$PEGU_KAGGLE_WORKING``."""
    return Path(os.environ.get(WORKING_ENV) or "/kaggle/working")


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def space_left(out: Path) -> tuple[int, str]:
    """(bytes ``out`` can still take, what limits it): the disk's free space, and on Kaggle
    under /kaggle/working what is left of its 20 GB."""
    probe = Path(out).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    root = working_root().resolve()
    if on_kaggle() and (probe == root or root in probe.parents):
        used = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        if WORKING_LIMIT - used < free:
            return max(0, WORKING_LIMIT - used), (
                f"{root} keeps {_gb(WORKING_LIMIT)} of output on Kaggle and holds {_gb(used)}")
    return free, f"the disk holding {probe} has {_gb(free)} free"


def check_space(sizes, out: Path) -> int:
    """Refuse a sweep whose images (``sizes``: the (width, height) of each run still to
    run) would not fit where ``out`` is; returns the estimate in bytes. The estimate is an
    upper bound: 3 bytes a pixel (an 8-bit RGB PNG compresses below that) and 4 KB a row."""
    sizes = list(sizes)
    need = sum(w * h * 3 + 4096 for w, h in sizes)
    left, why = space_left(out)
    if need > left:
        raise BadInput(
            f"this sweep would write up to {_gb(need)} ({len(sizes)} images) into {out}, and "
            f"{why}: fewer prompts, seeds or models, a smaller target, or split the grid "
            "and fetch each part's output before the next")
    return need


def session_deadline(time_limit_h: float | None = None) -> float | None:
    """When a sweep stops starting runs (a time.time() value): ``time_limit_h`` hours from
    now (a positive finite number; 0 or None: not given); else on Kaggle the session's 12 hours, less a margin, from the session's start (the
    container's first process); else never (None)."""
    if time_limit_h is not None and time_limit_h != 0:  # 0: none given (notebook 01's)
        if isinstance(time_limit_h, bool) or not isinstance(time_limit_h, (int, float)) \
                or not math.isfinite(time_limit_h) or time_limit_h < 0:
            raise BadInput(f"the time limit is a positive number of hours, e.g. 11.5 (0: "
                           f"none); got {time_limit_h!r}")
        return time.time() + float(time_limit_h) * 3600
    if not on_kaggle():
        return None
    return _session_start() + SESSION_HOURS * 3600 - MARGIN_S


SESSION_START_ENV = "PEGU_KAGGLE_SESSION_START"  # the simulation's session start (epoch s)


def _session_start() -> float:
    """When this machine's (container's) first process started; now if unknown.
    ``$PEGU_KAGGLE_SESSION_START`` stands in for it where the container is not a fresh
    Kaggle session (the simulation runs on a machine that has been up for days)."""
    given = os.environ.get(SESSION_START_ENV)
    if given:
        try:
            return float(given)
        except ValueError:
            raise BadInput(f"{SESSION_START_ENV} must be seconds since the epoch, got "
                           f"{given!r}") from None
    try:
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        ticks = int(Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return time.time()


def earlier_rows(resume_from: str | Path, out: Path) -> Path:
    """The folder of an earlier run of the sweep into ``out`` (holding ``rows/``):
    ``resume_from`` itself, or below it the folder whose path ends as ``out``'s does (its
    last two parts); "attached" looks in every attached Kaggle input (an earlier version's
    output, attached with ``pegu kaggle push --attach kernel:<you>/<notebook>``)."""
    tail = Path(out).resolve().parts[-2:]
    bases = attached_inputs() if str(resume_from) == "attached" else [Path(resume_from)]
    for base in bases:
        if (base / "rows").is_dir():
            return base
        hits = sorted(p.parent for p in base.rglob("rows")
                      if p.is_dir() and p.parent.parts[-len(tail):] == tail)
        if hits:
            return hits[0]
    raise BadInput(f"no earlier run of {'/'.join(tail)} (a folder with rows/) in "
                   f"{'the attached inputs' if str(resume_from) == 'attached' else resume_from}")
