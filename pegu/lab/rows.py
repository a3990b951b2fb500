"""A sweep's rows: one run into its row, and rows written and read as JSON files (never
half-written). Shared by the local sweep (:mod:`.sweep`) and the cluster's workers
(:mod:`.cluster`)."""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from ..core.errors import OutOfMemory, PeguError
from ..core.images import atomic_write
from ..core.settings import RunSettings
from ..pipeline import Models, timed_run
from . import metrics as M
from .grid import flatten


def result_row(result, image_path: Path | None, clip=None) -> dict:
    """One table row for a RunResult: flattened settings, status, stage costs, metrics."""
    row = {**flatten(result.settings.to_dict()), "status": result.status, "error": result.error,
           "seconds": round(result.seconds, 3),
           "peak_mib": round(result.peak_bytes / 2**20, 1),
           "memory": result.choices.memory, "device": result.choices.device,
           "warmed_up": result.warmed_up, "image": str(image_path) if image_path else None}
    if result.repeat_seconds:
        row.update(repeats=len(result.repeat_seconds), seconds_min=min(result.repeat_seconds),
                   seconds_max=max(result.repeat_seconds))
    for s in result.stages:
        row[f"{s.stage}.seconds"] = round(s.seconds, 3)
        row[f"{s.stage}.peak_mib"] = round(s.peak_bytes / 2**20, 1)
    if result.image is not None:
        row["sharpness"] = round(M.sharpness(result.image), 3)
        row["noise"] = round(M.noise_level(result.image), 3)
        row["images_per_hour"] = round(M.images_per_gpu_hour(result.seconds), 2)
        if clip is not None:
            row["clip_score"] = round(M.clip_score(clip, [result.image],
                                                   [result.settings.generate.prompt])[0], 3)
            row["clip_realism"] = round(M.clip_realism(clip, [result.image])[0], 4)
    return row


def write_row(path: Path, row: dict) -> None:
    """Write a row as JSON, atomically and flushed to disk (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(row, default=str, ensure_ascii=False)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_row(path: Path) -> dict | None:
    """A row file's row; None when it is damaged (truncated, edited), so it runs again."""
    try:
        row = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return row if isinstance(row, dict) else None


def run_row(d: dict, models: Models, image_path: Path, scorer, repeats: int, warmup: bool,
             progress: bool) -> dict:
    """One run of a sweep as its table row; a run that fails is a row with its error (and,
    with ``progress``, its traceback on stderr)."""
    import torch

    t0 = time.perf_counter()
    try:
        ready = models.ready(RunSettings.from_dict(d))  # a mismatch loads nothing
        result = timed_run(ready.settings, ready.generator, ready.upscaler, repeats=repeats,
                           warmup=warmup, progress=False)
        result.choices.upscaler_choice = ready.why
        image = result.save(image_path, overwrite=True) if result.image is not None else None
        row = result_row(result, image, scorer)
        load_seconds = sum(s.seconds for s in ready.loading)
        if load_seconds:
            row["load_seconds"] = round(load_seconds, 3)
        return row
    except Exception as e:  # a failed run is a row, and the sweep goes on
        oom = isinstance(e, (torch.OutOfMemoryError, OutOfMemory))
        if oom and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if progress and not isinstance(e, PeguError):  # pegu's refusals say it in one line
            traceback.print_exc(file=sys.stderr)
        return {**flatten(d), "status": "oom" if oom else "error",
                "error": f"{type(e).__name__}: {e}",
                "seconds": round(time.perf_counter() - t0, 3)}
