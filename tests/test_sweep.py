"""Sweeps: in process, resumed, over papermill, and split across two processes (GPUs)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

import pegu.pipeline.timing
from pegu.lab.studies import summarize
from pegu.lab.grid import load_grid
from pegu.lab.sweep import notebook_sweep, sweep

GRID = {
    "base": {"generate": {"width": 128, "height": 128}, "target": [512, 512],
             "upscale": {"model": "realesr-animevideov3"}},
    "models": ["tiny-sd15", "tiny-sdxl"],
    "prompts": ["portrait of a woman with red hair"],
    "seeds": [0, 1],
    "steps": [2, 0],  # steps 0 is invalid: those runs must fail alone
}
# what must match between two sweeps of the same grid (not the timings)
STABLE = ["index", "run_id", "model", "generate.seed", "generate.steps", "status", "error",
          "sharpness", "noise", "clip_score", "clip_realism"]


def stable(table: pd.DataFrame) -> pd.DataFrame:
    return table[[c for c in STABLE if c in table]].sort_values("index").reset_index(drop=True)


def test_grid_expands_every_combination(tmp_path):
    runs = load_grid(GRID)
    assert len(runs) == 8 and runs[0]["generate"]["width"] == 128
    assert {(r["model"], r["generate"]["seed"], r["generate"]["steps"]) for r in runs} == {
        (m, s, n) for m in GRID["models"] for s in (0, 1) for n in (2, 0)}
    (tmp_path / "g.yaml").write_text("models: [tiny-sd15]\nseeds: [1, 2, 3]\n")
    assert [r["generate"]["seed"] for r in load_grid(tmp_path / "g.yaml")] == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown grid keys \\['seed'\\]"):
        load_grid({"seed": [1]})
    with pytest.raises(FileNotFoundError):
        load_grid(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("models: [tiny-sd15\nseeds: 1\n")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML"):
        load_grid(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="grid axes \\['seeds'\\] are empty"):
        load_grid({"models": ["tiny-sd15"], "seeds": []})
    # 10^8 runs: refused from the axes' lengths, before any list is built
    huge = {"seeds": list(range(10_000)), "steps": list(range(1, 101)),
            "guidance": [float(g) for g in range(100)]}
    with pytest.raises(ValueError, match="makes 100,000,000 runs"):
        load_grid(huge, many=True)
    # 20,000 runs: only when asked for
    many = {"seeds": list(range(200)), "steps": list(range(1, 101))}
    with pytest.raises(ValueError, match="makes 20,000 runs.*pass --many"):
        load_grid(many)
    assert len(load_grid(many, many=True)) == 20_000


def test_sweep_with_a_failing_configuration_then_resume(tmp_path, monkeypatch):
    full = sweep(GRID, tmp_path / "full", clip="tiny-clip")
    assert len(full) == 8 and (full.status == "ok").sum() == 4
    bad = full[full.status == "error"]
    assert len(bad) == 4 and bad.error.str.contains("steps must be a whole number").all()
    ok = full[full.status == "ok"]
    assert all(Path(p).is_file() for p in ok.image)
    assert ok["generate.seconds"].gt(0).all() and ok["upscale.peak_mib"].gt(0).all()
    assert ok.clip_score.notna().all() and ok.sharpness.gt(0).all()
    on_disk = pd.read_csv(tmp_path / "full" / "results.csv")
    assert len(on_disk) == 8 and len(pd.read_parquet(tmp_path / "full" / "results.parquet")) == 8

    # interrupt the third run, then resume: the same table, finished rows not run again
    real_run, calls = pegu.pipeline.timing.run, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_run(*a, **k)

    monkeypatch.setattr(pegu.pipeline.timing, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(GRID, tmp_path / "resumed", clip="tiny-clip")
    monkeypatch.undo()
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "resumed" / "rows").glob("*.json")}
    assert 0 < len(kept) < 8 and not list((tmp_path / "resumed" / "rows").glob(".*"))
    resumed = sweep(GRID, tmp_path / "resumed", clip="tiny-clip", keep_failed=True)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    pd.testing.assert_frame_equal(stable(resumed), stable(full))


def test_resume_keeps_exactly_this_grid_and_repairs_what_a_kill_left(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "s"
    grid = {"base": GRID["base"], "models": ["tiny-sd15"], "seeds": [0],
            "steps": [2, "many"]}  # the failing run's row holds text where the other's a number
    first = sweep(grid, out, clip=None)
    assert list(first.status) == ["ok", "error"]
    assert pd.read_parquet(out / "results.parquet")["generate.steps"].tolist() == ["2", "many"]
    rows = {json.loads(p.read_text())["status"]: p for p in (out / "rows").glob("*.json")}
    # what a kill leaves: a truncated row, a dead writer's temp files; a live writer's stays
    good = rows["ok"].read_text()
    rows["ok"].write_text(good[: len(good) // 2])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = [out / "rows" / f".{rows['ok'].name}.{dead}.tmp",
             out / "images" / f".x.png.{dead}.tmp.png", out / f".results.csv.{dead}.tmp"]
    for p in stale:
        p.write_text("half")
    live = out / "rows" / f".other.json.{os.getpid()}.tmp"
    live.write_text("being written")
    error = json.loads(rows["error"].read_text())
    rows["error"].write_text(json.dumps(dict(error, error="from an earlier attempt")))
    kept = sweep(grid, out, clip=None, keep_failed=True)
    assert not any(p.exists() for p in stale) and live.exists()
    assert kept.status.tolist() == ["ok", "error"]  # the damaged row ran again
    assert kept.error.tolist()[1] == "from an earlier attempt"  # --keep-failed
    retried = sweep(grid, out, clip=None)  # by default a failed row runs again
    assert "steps must be a whole number" in retried.error.tolist()[1]
    # another grid in the same folder: its table is its own, the earlier rows set aside
    other = sweep({**grid, "seeds": [5], "steps": [2]}, out, clip=None)
    assert other["generate.seed"].tolist() == [5] and other.status.tolist() == ["ok"]
    assert len(pd.read_csv(out / "results.csv")) == 1
    assert len(list((out / "earlier" / "rows").glob("*.json"))) == 2


def test_killing_the_parent_ends_its_workers(tmp_path):
    """pegu sweep --processes 2, its parent killed with SIGKILL: the workers end too. Driven
    by events, not the clock: a worker's first progress line, then each worker's exit."""
    import re
    import select
    import signal
    import subprocess
    import sys
    import threading

    import yaml

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"base": GRID["base"], "models": ["tiny-sd15"],
                                    "seeds": list(range(400))}))
    exe = Path(sys.executable).parent / "pegu"
    parent = subprocess.Popen([str(exe), "sweep", "--grid", str(grid), "--out",
                               str(tmp_path / "o"), "--no-clip", "--processes", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the workers share the parent's stderr; by a worker's first row both were started
    if not any(re.search(r"\[\d/2\] run \d+ ", line) for line in parent.stderr):
        pytest.fail(f"the sweep ended without a worker's progress line ({parent.wait()})")
    pids = _children(parent.pid)
    workers = [os.pidfd_open(pid) for pid in pids]
    assert len(workers) == 2, "the sweep did not start two workers"
    threading.Thread(target=parent.stderr.read, daemon=True).start()  # keep the pipe open
    # held still while the parent dies, so that however fast they run they cannot finish
    # the sweep first; a worker that does not end with its parent resumes and runs on
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    rows = tmp_path / "o" / "rows"
    done = len(list(rows.glob("*.json")))
    parent.kill()
    parent.wait()
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    for fd in workers:  # readable once that process has exited
        select.select([fd], [], [])
        os.close(fd)
    # they ended with it, not after finishing the sweep on their own
    assert len(list(rows.glob("*.json"))) == done < 400


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_papermill_sweep_runs_the_notebook_per_parameter_set(tmp_path):
    notebook = Path(__file__).parent / "data" / "sweep_run.ipynb"
    table = notebook_sweep(notebook, {"parameters": {"seed": [0, 1], "target": 256}},
                           tmp_path / "nb")
    assert len(table) == 2 and (table.status == "ok").all()
    assert sorted(table["generate.seed"]) == [0, 1]
    executed = sorted((tmp_path / "nb" / "notebooks").glob("*.ipynb"))
    assert len(executed) == 2 and all(Path(p).is_file() for p in table.notebook)
    assert all(Path(p).is_file() for p in table.image)
    with pytest.raises(ValueError, match="has no parameters \\['cfg'\\]"):
        notebook_sweep(notebook, {"parameters": {"cfg": [7]}}, tmp_path / "bad")


def test_two_gpus_split_a_sweep_by_default(tmp_path, monkeypatch, capsys):
    """On a machine with two GPUs sweep() runs one worker process per GPU (here the CPU
    stands in for both): every run once, the same rows and pixels as one process; and each
    worker's line per run, naming model, prompt and seed, comes through this process's
    stderr (in a notebook, the cell), without the workers' interleaved bars."""
    import numpy as np
    from PIL import Image

    grid = dict(GRID, models=["tiny-sd15"], steps=[2])
    one = sweep(grid, tmp_path / "one")
    assert set(one.process) == {"0/1"}
    monkeypatch.setattr("pegu.lab.sweep.gpu_count", lambda: 2)
    capsys.readouterr()
    two = sweep(grid, tmp_path / "two", progress=True)
    said = capsys.readouterr().err
    for i in (0, 1):
        seed = one.set_index("index").loc[i, "generate.seed"]
        assert re.search(rf"\[\d/2\] run {i} of 2: tiny-sd15 '.+' seed {seed} upscale: ok in ",
                         said), said
    assert " steps:" not in said and " tiles:" not in said
    assert sorted(two.process) == ["0/2", "1/2"] and two.run_id.is_unique
    assert len(two) == 2 and (two.status == "ok").all()
    pd.testing.assert_frame_equal(stable(two), stable(one))
    for a, b in zip(one.sort_values("index").image, two.sort_values("index").image):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    again = sweep(grid, tmp_path / "two")  # resumed: nothing is run twice
    pd.testing.assert_frame_equal(again, two)


def test_attribute_control_and_plots(tmp_path):
    from PIL import Image

    from pegu.lab.plots import sweep_plots

    grid = {"base": GRID["base"], "models": ["tiny-sd15", "tiny-sdxl"], "seeds": [0],
            "attributes": {"template": "portrait of a woman with {hair} hair",
                           "hair": ["red", "black", "blonde"]}}
    table = sweep(grid, tmp_path, clip="tiny-clip")
    assert list(table["generate.prompt"][:3]) == [
        "portrait of a woman with red hair", "portrait of a woman with black hair",
        "portrait of a woman with blonde hair"]
    assert table.attribute_control.between(0, 1).all()
    assert table.groupby("model").attribute_control.nunique().eq(1).all()
    assert "attribute_control" in pd.read_csv(tmp_path / "results.csv")
    paths = sweep_plots(table, tmp_path)
    assert set(paths) == {"images", "stage_costs", "quality_vs_time"}
    assert Image.open(paths["images"]).size[0] > 400
    with pytest.raises(ValueError, match="template with one"):
        load_grid({"attributes": {"template": "no placeholder", "hair": ["red"]}})
    # the chance level and per-image hits a reader needs beside the share
    assert table.attribute_chance.eq(round(1 / 3, 4)).all()
    assert table.attribute_hit.isin([0.0, 1.0]).all()
    assert (table.groupby("model").attribute_hit.mean().round(4)
            == table.groupby("model").attribute_control.first()).all()
    reading = summarize(table)
    # three runs per model: the means and the chance level, and no winner named
    assert "Attribute control: no winner — 3 run(s) per model" in reading
    assert "chance 0.33" in reading and "Follows attribute edits best" not in reading


def test_sweep_timing_warm_up_repeats_and_loading(tmp_path, monkeypatch):
    grid = {"base": GRID["base"], "models": ["tiny-sd15"], "seeds": [0, 1, 2],
            "prompts": ["a", "b"], "timing": {"repeats": 2}}
    warmups = []
    real = pegu.pipeline.timing.warm_up
    monkeypatch.setattr(pegu.pipeline.timing, "warm_up", lambda *a, **k: warmups.append(
        real(*a, **k)) or warmups[-1])
    table = sweep(grid, tmp_path, clip=None)
    assert warmups.count(True) == 1 and len(warmups) == 6  # one shape: warmed once
    assert table.status.eq("ok").all() and table.repeats.eq(2).all()
    assert table.warmed_up.all()
    assert (table.seconds_min <= table.seconds).all() and (table.seconds <= table.seconds_max).all()
    assert table.load_seconds.notna().sum() == 1 and table.load_seconds.max() > 0
    reading = summarize(table)
    assert "the median of 2 timed runs, after an untimed warm-up" in reading
    assert "Means with 95% bootstrap intervals" in reading
    assert "[" in reading.split("| tiny-sd15 | 6 | ")[1]  # six runs: an interval
    for bad in ({"repeats": 0}, {"warmup": "yes"}, {"repeat": 2}, [2]):
        with pytest.raises(ValueError, match="timing"):
            load_grid({"models": ["tiny-sd15"], "timing": bad})


def test_cli_sweep(tmp_path):
    import subprocess
    import sys

    import yaml

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(dict(GRID, models=["tiny-sd15"], seeds=[0])))
    exe = Path(sys.executable).parent / "pegu"
    r = subprocess.run([str(exe), "sweep", "--grid", str(grid), "--out", str(tmp_path / "o"),
                        "--no-clip"], capture_output=True, text=True)
    assert r.returncode == 1  # one of the two runs fails by design (steps 0)
    assert "2 runs (1 ok, 1 error)" in r.stdout and "stage_costs" in r.stdout
    assert len(pd.read_csv(tmp_path / "o" / "results.csv")) == 2


def test_kaggle_limits_refuse_an_overflow_and_stop_before_the_session_ends(tmp_path, monkeypatch):
    """/kaggle/working keeps 20 GB: a sweep that would pass it is refused with its estimate
    before anything runs. A session ends at 12 hours: the sweep stops starting runs before
    then, and the next session carries the finished rows over from the earlier output."""
    import time

    import pegu.lab.limits as limits

    grid = {"base": {"generate": {"width": 64, "height": 64, "steps": 2}, "target": [256, 256],
                     "upscale": {"model": "realesr-animevideov3"}},
            "models": ["tiny-sd15"], "seeds": [0, 1, 2]}
    working = tmp_path / "working"
    monkeypatch.setenv("PEGU_KAGGLE_WORKING", str(working))
    monkeypatch.setattr(limits, "on_kaggle", lambda: True)
    (working / "old").mkdir(parents=True)
    (working / "old" / "big.bin").write_bytes(b"0" * 300_000)
    monkeypatch.setattr(limits, "WORKING_LIMIT", 300_000 + 2 * 200_704)  # room for 2 runs
    with pytest.raises(ValueError, match=r"would write up to 0.6 MB \(3 images\) into .*"
                                         r"keeps 0.7 MB of output on Kaggle and holds 0.3 MB: "
                                         r"fewer prompts"):
        sweep(grid, working / "results" / "prompts", clip=None)
    assert not (working / "results" / "prompts" / "rows").exists() or \
        not any((working / "results" / "prompts" / "rows").iterdir())
    monkeypatch.setattr(limits, "WORKING_LIMIT", 10**9)
    # a session that started 12 hours ago: past the deadline, nothing starts
    monkeypatch.setattr(limits, "_session_start", lambda: time.time() - 12 * 3600)
    first = working / "results" / "prompts"
    table = sweep(grid, first, clip=None)
    assert len(table) == 0 and "0 of 3 runs" in table.attrs["stopped"]
    # a session that just started: the first run starts; when it ends, the sweep's clock is
    # moved past the session's end (an event, not a wait), so the next does not start
    import pegu.lab.sweep as sweep_module

    class Clock:  # the time module, with time() shifted once the first run has ended
        shift = 0.0

        def time(self):
            return time.time() + self.shift

        def __getattr__(self, name):
            return getattr(time, name)

    clock = Clock()
    run_row = sweep_module.run_row

    def first_run_then_late(*args, **kwargs):
        row = run_row(*args, **kwargs)
        clock.shift = 13 * 3600
        return row

    monkeypatch.setattr(limits, "_session_start", time.time)
    monkeypatch.setattr(sweep_module, "time", clock)
    monkeypatch.setattr(sweep_module, "run_row", first_run_then_late)
    table = sweep(grid, first, clip=None)
    monkeypatch.setattr(sweep_module, "time", time)
    assert len(table) == 1 and "1 of 3 runs" in table.attrs["stopped"]
    assert "--attach kernel:<you>/<notebook> and resume_from='attached'" in \
        table.attrs["stopped"]
    # the next session: the earlier output attached as Kaggle mounts a kernel's output
    mount = tmp_path / "input" / "notebooks" / "alice" / "pegu-01-model-comparison"
    import shutil

    shutil.copytree(working / "results", mount / "results")
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setattr(limits, "on_kaggle", lambda: False)
    again = tmp_path / "next" / "results" / "prompts"
    table = sweep(grid, again, clip=None, resume_from="attached")
    assert len(table) == 3 and table.status.eq("ok").all() and "stopped" not in table.attrs
    carried = table[table["generate.seed"] == 0].iloc[0]
    assert Path(carried.image).parent == again / "images" and Path(carried.image).is_file()
    with pytest.raises(ValueError, match="no earlier run of results/prompts"):
        sweep(grid, tmp_path / "x" / "results" / "prompts", clip=None,
              resume_from=tmp_path / "next" / "elsewhere")
