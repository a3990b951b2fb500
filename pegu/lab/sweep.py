"""Sweeps: grids of settings -> runs (in process, or a notebook via papermill) -> one table.

Each run writes its row as ``rows/<run id>.json`` (atomically) and its image as
``images/<run id>.png``; the table (``results.csv`` and ``results.parquet``) is rebuilt from
the rows. A run whose row exists is skipped, so an interrupted sweep resumes where it
stopped, and a failed run is a row with its error, never a crash.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.device import gpu_count, resolve_device
from ..core.errors import BadInput, MissingFile, PeguError
from ..core.images import atomic_write, ensure_writable_dir, remove_stale_temp
from ..core.settings import GenerateSettings, RunSettings
from ..pipeline import Models, read_settings
from . import judges
from .grid import (attribute_questions, flatten, grid_iqa, grid_timing, load_grid, read_grid,
                   run_id)
from .iqa import score
from .limits import check_space, earlier_rows, session_deadline
from .cluster import cluster_runs
from .lock import TOKEN_ENV, writer_lock
from .rows import read_row, result_row, run_row, write_row
from .metrics import as_clip, attribute_hits


def add_iqa(table, out: Path, grid, device="auto") -> bool:
    """Score every successful row's image with the grid's IQA metrics (``iqa.<name>``
    columns). Scores are kept in ``out/iqa.json`` by run id, so a resumed sweep scores only
    new images. Returns whether columns were added."""
    names = grid_iqa(grid)
    if not names or not len(table):
        return False
    path = out / "iqa.json"
    try:
        kept = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        kept = {}  # a damaged cache is scored again
    ok = table[(table["status"] == "ok") & table["image"].notna()]
    for name in names:
        todo = [i for i in ok.index if name not in kept.get(ok.at[i, "run_id"], {})]
        if todo:
            scores = score([ok.at[i, "image"] for i in todo], [name], device=device,
                           prompts=[str(ok.at[i, "generate.prompt"]) for i in todo])[name]
            for i, v in zip(todo, scores):
                kept.setdefault(ok.at[i, "run_id"], {})[name] = round(v, 4)
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(kept, indent=1)))
        table[f"iqa.{name}"] = [kept.get(r, {}).get(name) if s == "ok" else None
                                for r, s in zip(table["run_id"], table["status"])]
        if name.removeprefix("tiny-") == "vqa":
            add_vqa_control(table, name, grid, device)
    return True


def add_vqa_control(table, name: str, grid, device="auto") -> None:
    """Attribute control by questions, beside CLIP's: in each group of
    :func:`add_attribute_control`, the VQA model is asked every variant's question (the
    grid's ``attributes.question``, else :data:`pegu.lab.judges.QUESTION` about the prompt)
    for every image;
    ``vqa_hit`` is 1 where it says "yes" most surely to the image's own variant (chance
    1 / number of variants, as for CLIP), ``vqa_yes`` 1 where it answers "yes" rather than
    "no" to its own prompt (chance about 1/2), ``vqa_control`` the group's share of hits."""
    from PIL import Image

    if not grid.get("attributes") or not len(table):
        return
    asks = attribute_questions(grid["attributes"])
    vqa = judges.load_judge("vqa", device=device, tiny=name.startswith("tiny-"))
    for _, group in _groups(table):
        if (group["status"] == "ok").all() and len(group) > 1:
            prompts = list(group["generate.prompt"])
            questions = [asks.get(q) or judges.QUESTION.format(q) for q in prompts]
            hits, yes = [], []
            for k, path in enumerate(group["image"]):
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    p = [vqa.yes_no(im, q) for q in questions]
                hits.append(float(int(np.argmax([y for y, _ in p])) == k))
                yes.append(float(p[k][0] > p[k][1]))
            table.loc[group.index, "vqa_hit"] = hits
            table.loc[group.index, "vqa_yes"] = yes
            table.loc[group.index, "vqa_control"] = round(sum(hits) / len(hits), 4)
            table.loc[group.index, "attribute_chance"] = round(1 / len(hits), 4)


def _groups(table):
    """The groups of runs that differ only in the prompt (an attribute grid's variants)."""
    fields = flatten(RunSettings(GenerateSettings("")).to_dict())
    keys = [c for c in fields if c in table and c != "generate.prompt"]
    return table.groupby([table[k].astype(str) for k in keys], dropna=False)


def add_attribute_control(table, clip, grid) -> None:
    """Fill ``attribute_control`` for attribute grids: among runs that differ only in the
    prompt, the share whose image CLIP matches to its own prompt variant (0–1, higher is
    better); per row ``attribute_hit`` (1 if this image matched its own variant, else 0) and
    ``attribute_chance`` (1 / number of variants: what guessing scores). Needs every run of
    a group to have succeeded."""
    from PIL import Image

    if clip is None or not grid.get("attributes") or not len(table):
        return
    for _, group in _groups(table):
        if (group["status"] == "ok").all() and len(group) > 1:
            images = [Image.open(p).convert("RGB") for p in group["image"]]
            hits = attribute_hits(clip, images, list(group["generate.prompt"]))
            table.loc[group.index, "attribute_hit"] = [float(h) for h in hits]
            table.loc[group.index, "attribute_control"] = round(sum(hits) / len(hits), 4)
            table.loc[group.index, "attribute_chance"] = round(1 / len(hits), 4)


def collect(out: Path, run_ids=None):
    """The rows under ``out/rows`` as a DataFrame (in grid order), also written to
    ``results.csv`` and ``results.parquet`` atomically. run_ids: the current grid's; rows of
    other (earlier) grids are moved aside to ``out/earlier/rows/``, not merged, and damaged
    row files are left out (the next run of the sweep runs them again)."""
    import pandas as pd

    out = Path(out)
    rows = []
    for p in sorted((out / "rows").glob("*.json")):
        if run_ids is not None and p.stem not in run_ids:
            aside = out / "earlier" / "rows"
            aside.mkdir(parents=True, exist_ok=True)
            os.replace(p, aside / p.name)
            continue
        row = read_row(p)
        if row is not None:
            rows.append(row)
    table = pd.DataFrame(rows)
    if "index" in table:
        table = table.sort_values("index").reset_index(drop=True)
    _write_tables(table, out)
    return table


def _typed(table):
    """One type per column: where rows disagree (an error row's text where the others hold
    numbers), the column holds text, so that no row can stop the Parquet write."""
    table = table.copy()
    for c in table.columns:
        if table[c].dtype == object:
            kinds = {type(v) for v in table[c] if v is not None and v == v}
            if len(kinds) > 1:
                table[c] = table[c].map(lambda v: v if v is None or v != v else str(v))
    return table


def _write_tables(table, out: Path) -> None:
    table = _typed(table)
    atomic_write(out / "results.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "results.parquet", lambda p: table.to_parquet(p, index=False))


def _prepare(out: Path) -> None:
    """Before a sweep (or its resume) writes: temp files of a killed run are removed."""
    for folder in (out, out / "rows", out / "images"):
        remove_stale_temp(folder)


def parse_shard(shard) -> tuple[int, int]:
    """(i, n) from (i, n) or "I/N", with 0 <= i < n; else BadInput."""
    if isinstance(shard, str):
        parts = shard.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise BadInput(f"shard must be I/N with 0 <= I < N, e.g. 0/2; got {shard!r}")
        shard = (int(parts[0]), int(parts[1]))
    try:
        i, n = shard
    except (TypeError, ValueError):
        raise BadInput(f"shard must be I/N with 0 <= I < N, got {shard!r}") from None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (i, n)) \
            or not 0 <= i < n:
        raise BadInput(f"shard must be I/N with 0 <= I < N, got {i}/{n}")
    return i, n


def shard_from_env() -> tuple[int, int]:
    """(this process, number of processes) under ``accelerate launch`` / torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def sweep(grid, out, *, device="auto", clip: str | None = None,
          shard: tuple[int, int] | None = None, progress: bool = False,
          processes: int | str = "auto", keep_failed: bool = False, many: bool = False,
          offline: bool | None = None, time_limit_h: float | None = None,
          resume_from: str | Path | None = None, cluster: str | None = None,
          workers: int | None = None):
    """Run every run of ``grid`` (see :func:`pegu.lab.grid.load_grid`) into ``out``;
    returns the table.

    Models are loaded once per run of consecutive runs that use them (that row's
    ``load_seconds``, not part of its ``seconds``). Timing (the grid's ``timing``, see
    :func:`pegu.lab.grid.grid_timing`): by default each model and shape first gets an
    untimed warm-up run, and each row is the median of ``repeats`` runs (``seconds_min`` /
    ``seconds_max`` beside it). clip: a CLIP model name for the clip_score / clip_realism
    columns (None: weight-free metrics only), or a loaded Clip. processes: "auto" = one
    process per GPU when this machine has several and ``device`` is "auto" (Kaggle's GPU T4
    x2: two), else this process; N = split across N worker processes
    (:func:`sweep_processes`), rows merged. shard: (i, n) or "I/N" runs only every n-th run starting
    at i (default: from ``accelerate launch``'s RANK / WORLD_SIZE), so several processes
    share one sweep. many: allow a grid of more than ``MANY_RUNS`` runs. offline: never use
    the network (default: ``$PEGU_OFFLINE`` / ``$HF_HUB_OFFLINE``).

    Resuming (the same call again): finished rows are kept, failed ones run again (unless
    ``keep_failed``), damaged row files run again, a killed run's temp files are removed, and
    rows of an earlier grid in ``out`` are moved to ``out/earlier/`` (the table is exactly
    this grid's). ``resume_from``: an earlier run's folder (or "attached": an attached
    Kaggle input, see :func:`pegu.lab.limits.earlier_rows`) whose finished rows and images
    are carried into ``out`` first.

    cluster: run on a Ray cluster instead of this process (:mod:`pegu.lab.cluster`): "ray"
    (``$RAY_ADDRESS``, else a new local cluster), "auto" or an address; ``workers`` of one
    GPU each (default: every GPU of the cluster; on a CPU cluster one per CPU). The table is
    the local sweep's in every column but the timings and ``process``.

    Limits: a sweep whose images would not fit where ``out`` is (on Kaggle: /kaggle/working's
    20 GB) is refused before it starts, with its estimate; it stops starting runs when the
    next would end after ``time_limit_h`` hours (on Kaggle by default: before the session's
    12 hours), keeps what finished and says how to continue (``table.attrs["stopped"]``).
    """
    out = ensure_writable_dir(Path(out))
    grid = read_grid(grid)  # read once: the runs, then attribute control, use it
    runs = load_grid(grid, many=many)
    _check_some_valid(runs, grid)
    if cluster and processes not in ("auto", 1):
        raise BadInput("a cluster sweep spreads its runs over --workers: leave --processes out")
    if workers is not None and not cluster:
        raise BadInput("--workers counts a cluster's workers: add --cluster ray, or use "
                       "--processes N on this machine")
    index, count = parse_shard(shard) if shard else shard_from_env()
    shared = _digest([run_id(d) for d in runs]) if count > 1 else None
    with writer_lock(out, shared=shared) as token:  # one sweep writes into ``out``
        return _sweep(grid, runs, out, index, count, token, device=device, clip=clip,
                      progress=progress, processes=processes, keep_failed=keep_failed,
                      many=many, offline=offline, time_limit_h=time_limit_h,
                      resume_from=resume_from, cluster=cluster, workers=workers)


def _cluster_sweep(grid, runs, pending, out: Path, ids: set, *, cluster, workers, device,
                   clip, offline, repeats, warmup, deadline, progress, shard: bool):
    """The sweep's pending runs on a Ray cluster; the driver writes every row and image."""
    if shard:
        raise BadInput("a cluster sweep runs the whole grid: leave --shard out")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise BadInput(f"workers must be a positive number, got {workers!r}")

    def on_row(i, rid, row, data):
        image = out / "images" / f"{rid}.png"
        if data is not None:
            image.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(image, lambda tmp: tmp.write_bytes(data))
        row.update(index=i, run_id=rid, image=str(image) if data is not None else None)
        write_row(out / "rows" / f"{rid}.json", row)
        if progress:
            print(_run_line(row.get("process", "ray"), 0, i, len(runs), runs[i], row),
                  file=sys.stderr, flush=True)

    name = getattr(clip, "name", clip)
    cluster_runs(pending, [run_id(d) for _, d in pending], cluster=cluster, workers=workers,
                 device=device, clip=name, offline=offline, repeats=repeats, warmup=warmup,
                 deadline=deadline, on_row=on_row)
    dev = resolve_device(device)
    return _finish(collect(out, ids), out, grid, len(ids), dev,
                   _driver_clip(grid, clip, dev, offline))


def _driver_clip(grid, clip, dev, offline):
    """CLIP in this process for the attribute control of a table others computed (worker
    processes, a cluster); None when the grid has no attributes."""
    return as_clip(clip, device=dev, offline=offline) if grid.get("attributes") else None


def _finish(table, out: Path, grid, total: int, dev, scorer):
    """The whole table's columns that span rows (attribute control, iqa), the tables
    written again when they gained any, and a stop at the deadline noted."""
    add_attribute_control(table, scorer, grid)
    if add_iqa(table, out, grid, dev) or "attribute_control" in table:
        _write_tables(table, out)
    return _note_stop(table, total, out)


def _check_some_valid(runs: list[dict], grid) -> None:
    """Refuse, before anything runs, a grid none of whose runs has valid settings (a typo
    in the base or an axis every run shares); where only some are invalid, those fail
    alone as rows."""
    first = None
    for d in runs:
        try:
            RunSettings.from_dict(d)
            return
        except (ValueError, TypeError) as e:
            first = first or e
    if first is not None:
        raise BadInput(f"no run of the grid has valid settings: {first}") from None


def _sweep(grid: dict, runs: list, out: Path, index: int, count: int, token, *, device, clip,
           progress, processes, keep_failed, many, offline, time_limit_h, resume_from,
           cluster=None, workers=None):
    warmup, repeats = grid_timing(grid)
    ids = {run_id(d) for d in runs}
    _prepare(out)
    _record_grid(out, grid, runs)
    if resume_from:
        _carry(earlier_rows(resume_from, out), out, ids)
    pending = [(i, d) for i, d in enumerate(runs) if not _finished(out, run_id(d), keep_failed)]
    if count == 1 or index == 0:
        check_space([_target(d) for _, d in pending], out)
    deadline = session_deadline(time_limit_h)
    if cluster:
        return _cluster_sweep(grid, runs, pending, out, ids, cluster=cluster, workers=workers,
                              device=device, clip=clip, offline=offline, repeats=repeats,
                              warmup=warmup, deadline=deadline, progress=progress,
                              shard=count > 1)
    if processes == "auto":
        processes = max(1, gpu_count()) if count == 1 and device == "auto" else 1
    if not isinstance(processes, int) or processes < 1:
        raise BadInput(f"processes must be 'auto' or a positive number, got {processes!r}")
    if processes > 1 and count == 1:
        table = sweep_processes(grid, out, processes, device=device,
                                clip=getattr(clip, "name", clip), keep_failed=keep_failed,
                                many=many, offline=offline, progress=progress,
                                deadline=deadline, token=token)
        dev = resolve_device(device)  # the workers' tables never hold attribute control
        return _finish(table, out, grid, len(ids), dev, _driver_clip(grid, clip, dev, offline))
    if device == "auto" and count > 1 and gpu_count() > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', index)) % gpu_count()}"
    dev = resolve_device(device)
    scorer = as_clip(clip, device=dev, offline=offline)
    todo = [(i, d) for i, d in pending if i % count == index]
    # consecutive runs of one model reuse it: order by model, then upscaler
    todo.sort(key=lambda t: (str(t[1].get("model")), str(t[1].get("upscale")), t[0]))
    models = Models(dev, offline=offline)
    took = []
    # one bar over the runs in one process (the runs' own bars off: one cell, one bar); with
    # several processes, their bars would interleave: run lines only
    bar = tqdm(todo, desc="runs", unit="run", disable=not (progress and count == 1))
    for i, d in bar:
        rid = run_id(d)
        if deadline and time.time() + max(took, default=0) > deadline:
            break  # the next run would end after the deadline: stop, keep what finished
        bar.set_postfix_str(short_run(d))
        t0 = time.time()
        row = run_row(d, models, out / "images" / f"{rid}.png", scorer, repeats, warmup,
                       progress)
        row.update(index=i, run_id=rid, process=f"{index}/{count}")
        write_row(out / "rows" / f"{rid}.json", row)
        took.append(time.time() - t0)
        if progress:
            bar.write(_run_line(index, count, i, len(runs), d, row), file=sys.stderr)
    bar.close()
    table = collect(out, ids)
    if count == 1:  # the whole table is here: the columns that span rows
        models.release()  # free the models first
        _finish(table, out, grid, len(ids), dev, scorer)
    return table


GRID_RECORD = "grid.json"  # the grid a sweep folder holds the runs of (merge checks it)


def _record_grid(out: Path, grid: dict, runs: list[dict]) -> None:
    """``OUT/grid.json``: the grid and its run ids, in grid order, so that the folder says
    which sweep it holds (:func:`merge` refuses folders of another grid)."""
    write_row(out / GRID_RECORD, {"grid": grid, "runs": len(runs),
                                  "digest": _digest([run_id(d) for d in runs])})


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def _grid_record(folder: Path) -> dict:
    path = Path(folder) / GRID_RECORD
    record = read_row(path) if path.is_file() else None
    if not isinstance(record, dict) or not isinstance(record.get("grid"), dict):
        raise BadInput(f"{folder} holds no sweep's {GRID_RECORD} (not a pegu sweep folder, or "
                       "one from before pegu recorded its grid): give --grid, the grid it ran")
    return record


def merge(folders, out, grid=None):
    """Merge sweep folders of one grid (shards, Kaggle kernels' outputs, earlier sessions)
    into ``out``: one table equal to a single sweep of the grid (in grid order), the
    finished runs' rows and images copied in (a run finished in any folder counts; rows
    already in ``out`` are kept). ``grid``: the grid (a dict or YAML file; default the one
    the first folder recorded). A folder of another grid is refused, naming it; runs that
    no folder finished are listed in ``table.attrs["missing"]`` (re-run the sweep into
    ``out`` to run just those). Returns the table."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise BadInput("give the sweep folders to merge")
    for f in folders:
        if not (f / "rows").is_dir():
            raise MissingFile(f"{f} is not a sweep folder (no rows/)")
    if grid is None:
        grid = _grid_record(folders[0])["grid"]
    grid = read_grid(grid)
    runs = load_grid(grid, many=True)
    ids = [run_id(d) for d in runs]
    for f in folders:
        record = _grid_record(f) if (f / GRID_RECORD).is_file() else None
        held = {p.stem for p in (f / "rows").glob("*.json")}
        if record is None and held and not held & set(ids):
            raise BadInput(f"{f} holds none of this grid's runs: a sweep of another grid")
        if record is not None and record.get("digest") != _digest(ids):
            raise BadInput(f"{f} holds a sweep of another grid ({record.get('runs')} runs; "
                           f"this grid has {len(ids)} others or in another order): merge only "
                           "folders of one grid")
    out = ensure_writable_dir(Path(out))
    with writer_lock(out, "pegu sweep merge"):
        _prepare(out)
        _record_grid(out, grid, runs)
        for f in folders:
            if f.resolve() != out.resolve():
                _carry(f, out, set(ids))
        table = collect(out, set(ids))
    done = set(table["run_id"][table["status"] == "ok"]) if len(table) else set()
    table.attrs["missing"] = [(i, runs[i]) for i, rid in enumerate(ids) if rid not in done]
    return table


def _finished(out: Path, rid: str, keep_failed: bool) -> bool:
    """Whether run ``rid`` has its row in ``out`` (a failed one counts with keep_failed)."""
    path = out / "rows" / f"{rid}.json"
    done = read_row(path) if path.exists() else None
    return done is not None and (done.get("status") == "ok" or keep_failed)


def _target(d: dict) -> tuple[int, int]:
    """The (width, height) run ``d`` writes (an invalid run, which fails as a row: its
    target as given, else the default)."""
    try:
        return RunSettings.from_dict(d).target
    except (BadInput, TypeError, ValueError):
        try:
            w, h = (int(v) for v in d.get("target") or RunSettings.target)
            return w, h
        except (TypeError, ValueError):
            return RunSettings.target


def _carry(earlier: Path, out: Path, ids: set) -> None:
    """Finished rows of this grid from an earlier run's folder, with their images, into
    ``out`` (rows already there are kept). A row is carried only when its image's recipe
    is the row's run (every setting the row names, as the PNG records it): an image
    replaced or damaged since makes the run run again."""
    for path in sorted((earlier / "rows").glob("*.json")):
        row = read_row(path)
        if row is None or row.get("status") != "ok" or path.stem not in ids \
                or (out / "rows" / path.name).exists():
            continue
        image = earlier / "images" / f"{path.stem}.png"
        if row.get("image") and not _recipe_is(image, row):
            continue
        if image.is_file():
            target = out / "images" / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp, src=image: shutil.copyfile(src, tmp))
            row["image"] = str(target)
        write_row(out / "rows" / path.name, row)


def _recipe_is(image: Path, row: dict) -> bool:
    """Whether ``image`` carries the recipe of ``row``'s run (its settings columns)."""
    try:
        recipe = flatten(read_settings(image).to_dict())
    except (OSError, ValueError):
        return False
    return all(str(recipe[k]) == str(v) for k, v in row.items() if k in recipe)


def _note_stop(table, total: int, out: Path):
    """When a sweep stopped at its deadline: say so, and how to continue."""
    if len(table) < total:
        table.attrs["stopped"] = note = (
            f"stopped at the time limit: {len(table)} of {total} runs are in {out} (the next "
            "would have ended after it). To continue, run the same sweep again; on Kaggle, let "
            "this version finish, then push again with --attach kernel:<you>/<notebook> and "
            "resume_from='attached'.")
        print(note, file=sys.stderr, flush=True)
    return table


def short_run(d: dict, width: int = 30) -> str:
    """A run as a person names it: model, prompt (cut to ``width``), seed."""
    g = d.get("generate") or {}
    prompt = str(g.get("prompt", ""))
    prompt = prompt if len(prompt) <= width else prompt[:width - 1] + "…"
    return f"{d.get('model', RunSettings.model)} {prompt!r} seed {g.get('seed', 0)}"


def _run_line(index, count: int, i: int, total: int, d: dict, row: dict) -> str:
    """What a person follows a sweep by: which process (``index``/``count``, or a Ray
    worker's name as ``index``), which run of how many, its model, prompt, seed and mode,
    and how it ended."""
    ended = (f"ok in {row['seconds']:.1f} s" if row["status"] == "ok"
             else f"{row['status']}: {row.get('error') or ''}")
    who = index if isinstance(index, str) else f"{index}/{count}"
    return (f"[{who}] run {i} of {total}: {short_run(d, 40)} "
            f"{d.get('mode', RunSettings.mode)}: {ended}")


def sweep_processes(grid, out, processes: int, *, device="auto", clip: str | None = None,
                    keep_failed: bool = False, many: bool = False,
                    offline: bool | None = None, progress: bool = False,
                    deadline: float | None = None, token: str | None = None):
    """Split a sweep over ``processes`` worker processes (``pegu sweep --shard i/n``) and
    merge their rows into one table. With ``device="auto"`` worker i takes GPU i when there
    are several (as under ``accelerate launch --num_processes N -m pegu.cli sweep ...``).
    ``grid``: a YAML file or a dict (written to ``out/.grid.json`` for the workers). With
    ``progress`` each worker's line per run comes through this process's ``sys.stderr``
    (in a notebook: the cell, not the kernel's log). The workers end with this process,
    however it ends (on Linux even when killed). token: the folder's writer lock
    (:func:`pegu.lab.lock.writer_lock`) the workers work under; None: this call takes it."""
    if token is None:
        with writer_lock(out) as token:
            return sweep_processes(grid, out, processes, device=device, clip=clip,
                                   keep_failed=keep_failed, many=many, offline=offline,
                                   progress=progress, deadline=deadline, token=token)
    runs = load_grid(grid, many=many)  # fail here, not in every worker
    if isinstance(grid, dict):
        grid_path = Path(out) / ".grid.json"
        write_row(grid_path, grid)  # the same atomic JSON write as the rows
        grid = grid_path
    processes = max(1, min(processes, len(runs)))
    cmd = [sys.executable, "-m", "pegu.cli", "sweep", "--grid", str(grid), "--out", str(out),
           "--device", device] + (["--clip", clip] if clip else ["--no-clip"]) + (
        ["--keep-failed"] if keep_failed else []) + (["--many"] if many else []) + (
        [] if offline is None else ["--offline" if offline else "--no-offline"]) + (
        [] if progress else ["--no-progress"]) + (
        ["--time-limit", f"{max(deadline - time.time(), 1) / 3600:.6f}"] if deadline else [])
    linux = sys.platform.startswith("linux")
    workers = []
    try:
        for i in range(processes):
            workers.append(subprocess.Popen(cmd + ["--shard", f"{i}/{processes}"],
                                            env={**os.environ, TOKEN_ENV: token or ""},
                                            stderr=subprocess.PIPE, text=True, bufsize=1,
                                            preexec_fn=_end_with_parent if linux else None))
        relays = [threading.Thread(target=_relay, args=(w.stderr,), daemon=True)
                  for w in workers]
        for r in relays:
            r.start()
        codes = [w.wait() for w in workers]
        for r in relays:
            r.join()
    finally:
        for w in workers:  # interrupted: stop the workers too (their finished rows stay)
            if w.poll() is None:
                w.terminate()
                w.wait()
    if any(codes):
        raise PeguError(f"sweep workers exited with {codes}; finished rows are kept, "
                           "run the same command again to resume")
    return collect(out, {run_id(d) for d in runs})


def _relay(stream) -> None:
    """A worker's stderr, line by line, onto this process's ``sys.stderr``."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()


def _end_with_parent() -> None:
    """In a worker, before it starts (Linux): SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


# ---- papermill ----

def notebook_sweep(notebook, grid, out, *, kernel: str | None = None, progress: bool = False,
                   keep_failed: bool = False):
    """Execute ``notebook`` once per parameter set with papermill, keeping each executed
    notebook in ``out/notebooks/``, and collect the rows the runs recorded.

    ``grid``: a dict or YAML file ``{"parameters": {name: [values...]}}`` (every combination)
    or ``{"runs": [{name: value}, ...]}``. Each run gets one more parameter, ``record_to``:
    the path where the notebook's ``pegu.sweep.record(result, record_to)`` writes its row.
    A run that fails keeps its executed notebook and becomes a row with the error. Resuming
    works as in :func:`sweep` (failed rows run again unless ``keep_failed``).
    """
    import papermill as pm

    notebook = Path(notebook)
    if not notebook.is_file():
        raise MissingFile(f"notebook not found: {notebook}")
    grid = read_grid(grid)
    if "runs" in grid:
        runs = list(grid["runs"])
    else:
        params = grid.get("parameters") or {}
        names = list(params)
        runs = [dict(zip(names, combo)) for combo in itertools.product(
            *[v if isinstance(v, list) else [v] for v in params.values()])]
    out = ensure_writable_dir(Path(out))
    with writer_lock(out, "pegu sweep --notebook"):
        return _notebook_sweep(pm, notebook, runs, out, kernel, progress, keep_failed)


def _notebook_sweep(pm, notebook: Path, runs: list, out: Path, kernel, progress, keep_failed):
    _prepare(out)
    declared = pm.inspect_notebook(str(notebook))
    ids = set()
    for i, params in enumerate(runs):
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise BadInput(f"{notebook.name} has no parameters {unknown}; it declares "
                             f"{sorted(declared)}")
        rid = run_id({"notebook": notebook.name, **params})
        ids.add(rid)
        row_path = out / "rows" / f"{rid}.json"
        done = read_row(row_path) if row_path.exists() else None
        if done is not None and (done.get("status") == "ok" or keep_failed):
            continue
        executed = out / "notebooks" / f"{notebook.stem}_{rid}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        row_path.unlink(missing_ok=True)  # a failed or damaged row: this run replaces it
        try:
            pm.execute_notebook(str(notebook), str(executed),
                                parameters={**params, "record_to": str(row_path)},
                                kernel_name=kernel, progress_bar=progress)
            row = read_row(row_path) if row_path.exists() else None
            if row is None:
                raise PeguError(f"{notebook.name} ran but recorded nothing; its last cell "
                                   "must call pegu.sweep.record(result, record_to)")
        except Exception as e:
            row = {**flatten(params), "status": "error",
                   "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"}
        row.update(index=i, run_id=rid, notebook=str(executed))
        write_row(row_path, row)
    return collect(out, ids)


def record(result, record_to, clip=None) -> dict:
    """In a notebook run by :func:`notebook_sweep`: write ``result``'s row to ``record_to``
    (the parameter papermill passed), with its image beside it. No-op when ``record_to`` is
    empty (the notebook run by hand)."""
    if not record_to:
        return {}
    path = Path(record_to)
    image = None
    if result.image is not None:
        image = result.save(path.parent.parent / "images" / f"{path.stem}.png", overwrite=True)
    row = result_row(result, image, clip)
    write_row(path, row)
    return row
