"""Sweeps that outgrow one machine (issue 31): shards merged into the whole, a merge that
lists what is missing and a re-run that runs just that, folders of another grid refused."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pegu.cli import main

BASE = {"model": "tiny-sd15", "target": [64, 64], "generate": {"steps": 1},
        "upscale": {"model": "realesr-animevideov3"}}
GRID = {"base": BASE, "prompts": ["a portrait", "an old fisherman"], "seeds": [0, 1]}
# what differs between two runs of the same settings: time, memory, where it ran
VARYING = ("seconds", "load_seconds", "peak", "process", "image", "stage", "repeat",
           "warm", "rss", "vram")


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    keep = [c for c in table.columns if not any(v in c for v in VARYING)]
    return table[keep].sort_values("index").reset_index(drop=True)


def pixels(table: pd.DataFrame) -> list:
    return [np.asarray(Image.open(p)) for p in table.sort_values("index")["image"]]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One sweep of GRID in one process: what every way of splitting it must equal."""
    out = tmp_path_factory.mktemp("whole")
    grid = out.parent / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--no-clip",
                 "--no-progress"]) == 0
    return grid, pd.read_parquet(out / "results.parquet")


def test_shards_merged_equal_the_whole_and_a_partial_merge_lists_what_is_missing(
        whole, tmp_path, capsys):
    grid, table = whole
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, folder in enumerate(shards):
        assert main(["sweep", "--grid", str(grid), "--out", str(folder), "--no-clip",
                     "--shard", f"{i}/2", "--no-progress"]) == 0
    merged = tmp_path / "merged"
    assert main(["sweep", "merge", *map(str, shards), "--out", str(merged)]) == 0
    got = pd.read_parquet(merged / "results.parquet")
    pd.testing.assert_frame_equal(comparable(got), comparable(table), check_like=True)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(got), pixels(table)))
    capsys.readouterr()
    # one shard alone: half the runs, the others listed; re-running the grid it recorded
    # into the folder runs just those
    part = tmp_path / "part"
    assert main(["sweep", "merge", str(shards[0]), "--out", str(part)]) == 1
    said = capsys.readouterr().out
    assert "2 runs still missing" in said and said.count("  run ") == 2
    before = {p.name: p.stat().st_mtime_ns for p in (part / "rows").glob("*.json")}
    assert main(["sweep", "--grid", str(part / "grid.json"), "--out", str(part), "--no-clip",
                 "--no-progress"]) == 0
    after = pd.read_parquet(part / "results.parquet")
    pd.testing.assert_frame_equal(comparable(after), comparable(table), check_like=True)
    assert all((part / "rows" / n).stat().st_mtime_ns == t for n, t in before.items())


def test_a_kaggle_style_continuation_reruns_nothing_but_a_tampered_run(whole, tmp_path,
                                                                       monkeypatch, capsys):
    """The earlier kernel's output attached as Kaggle mounts it (notebooks/<owner>/<slug>);
    the next version resumes from it: no run runs again, except one whose image was
    swapped for another run's (its recipe is not its row's)."""
    import shutil

    grid, table = whole
    mount = tmp_path / "input" / "notebooks" / "alice" / "pegu-01-model-comparison"
    done = mount / "results" / "01_model_comparison" / "prompts"
    assert main(["sweep", "--grid", str(grid), "--out", str(done), "--no-clip",
                 "--no-progress"]) == 0
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    again = tmp_path / "working" / "results" / "01_model_comparison" / "prompts"
    capsys.readouterr()
    assert main(["sweep", "--grid", str(grid), "--out", str(again), "--no-clip",
                 "--resume-from", "attached"]) == 0
    assert " run " not in capsys.readouterr().err  # nothing ran
    got = pd.read_parquet(again / "results.parquet")
    pd.testing.assert_frame_equal(comparable(got), comparable(table), check_like=True)
    images = sorted((done / "images").glob("*.png"))
    shutil.copyfile(images[0], images[1])  # run 1's image is now run 0's
    shutil.rmtree(again)
    assert main(["sweep", "--grid", str(grid), "--out", str(again), "--no-clip",
                 "--resume-from", "attached"]) == 0
    assert capsys.readouterr().err.count("] run ") == 1  # just the tampered one


def test_a_folder_of_another_grid_is_refused(whole, tmp_path, capsys):
    grid, _ = whole
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(dict(GRID, seeds=[5])))
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["sweep", "--grid", str(grid), "--out", str(a), "--no-clip", "--shard", "0/4",
                 "--no-progress"]) == 0
    assert main(["sweep", "--grid", str(other), "--out", str(b), "--no-clip", "--shard",
                 "0/4", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sweep", "merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert f"{b} holds a sweep of another grid" in err and len(err.splitlines()) == 1
    assert main(["sweep", "merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == 2
    assert "is not a sweep folder" in capsys.readouterr().err


@pytest.mark.parametrize("extra, says", [
    (["--cluster", "ray", "--processes", "2"], "leave --processes out"),
    (["--workers", "2"], "add --cluster ray"),
])
def test_contradictory_scale_out_flags_are_refused_before_anything_runs(whole, tmp_path,
                                                                        capsys, extra, says):
    grid, _ = whole
    out = tmp_path / "out"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--no-clip",
                 "--no-progress", *extra]) == 2
    assert says in capsys.readouterr().err
    assert not (out / "rows").exists()


# ---- a Ray cluster: one local 2-CPU cluster per test session ----

@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A local Ray cluster of 2 CPUs for the session, started as a user starts a head node
    (``ray start --head``); its address is what `pegu sweep --cluster` joins."""
    import shutil
    import socket
    import subprocess
    import sys
    from pathlib import Path

    ray_exe = Path(sys.executable).parent / "ray"
    if not ray_exe.exists():
        pytest.fail("ray is not installed (make setup installs it from requirements-dev.txt)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # a throwaway cluster of this machine: no token (Ray >= 2.5x turns token auth on and
    # keeps the token in ~/.ray, which the test must not touch); drivers inherit this
    os.environ["RAY_AUTH_MODE"] = "disabled"
    subprocess.run([str(ray_exe), "start", "--head", "--num-cpus", "2", "--port", str(port),
                    "--include-dashboard", "false", "--temp-dir", str(temp),
                    "--object-store-memory", str(300 * 2**20), "--disable-usage-stats"],
                   check=True, capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run([str(ray_exe), "stop", "--force"], capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


def test_a_ray_cluster_sweep_equals_the_local_one(whole, ray_address, tmp_path, capsys):
    grid, table = whole
    out = tmp_path / "ray"
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--no-clip", "--cluster",
                 ray_address]) == 0
    got = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(comparable(got), comparable(table), check_like=True)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(got), pixels(table)))
    assert got["process"].str.startswith("ray:").all()
    err = capsys.readouterr().err
    assert err.count("] run ") == 4 and "Traceback" not in err and "INFO" not in err, err
    # resumed: nothing runs again
    before = {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")}
    assert main(["sweep", "--grid", str(grid), "--out", str(out), "--no-clip", "--cluster",
                 ray_address]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "rows").glob("*.json")} == before


def test_a_worker_killed_mid_sweep_loses_nothing(ray_address, tmp_path):
    """Event-driven: the first run line names its worker's process; it is SIGKILLed, and
    the sweep still ends with every run once, each ok."""
    import re
    import signal
    import subprocess
    import sys
    import threading
    from pathlib import Path

    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(dict(GRID, prompts=["a portrait"], seeds=list(range(16)))))
    out = tmp_path / "o"
    sweep = subprocess.Popen([str(Path(sys.executable).parent / "pegu"), "sweep", "--grid",
                              str(grid), "--out", str(out), "--no-clip", "--cluster",
                              ray_address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    killed = None
    for line in sweep.stderr:
        m = re.search(r"\[ray:[^:]+:(\d+)\] run \d+ ", line)
        if m:
            killed = int(m.group(1))
            os.kill(killed, signal.SIGKILL)
            break
    rest = []
    reader = threading.Thread(target=lambda: rest.extend(sweep.stderr), daemon=True)
    reader.start()
    assert sweep.wait() == 0, "".join(rest)
    reader.join()
    assert killed is not None, "no run line named a Ray worker"
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == 16 and (table["status"] == "ok").all()
    assert sorted(table["generate.seed"]) == list(range(16))
    assert not table["process"].str.endswith(f":{killed}").all()


def test_notebook_01s_sweep_cell_on_ray_gives_the_local_table(ray_address, tmp_path):
    """Notebook 01's own cells up to its sweep (parameters, import, the sweep cell), run by
    papermill with cluster "" and with the Ray cluster's address: the same table."""
    import json
    from pathlib import Path

    import papermill as pm

    source = json.loads((Path(__file__).parents[1] / "notebooks" /
                         "01_model_comparison.ipynb").read_text())
    cut = next(i for i, c in enumerate(source["cells"])
               if "pegu.sweep.sweep(grid" in "".join(c["source"]))
    trimmed = tmp_path / "01_sweep_cell.ipynb"
    trimmed.write_text(json.dumps(dict(source, cells=source["cells"][:cut + 1])))
    params = dict(models=["tiny-sd15"], prompts=["portrait of an old man"], seeds=[0, 1],
                  steps=1, size=128, target=256, upscaler="realesr-animevideov3",
                  clip_model="", iqa=[])
    tables = []
    for cluster in ("", ray_address):
        out = tmp_path / ("ray" if cluster else "local")
        pm.execute_notebook(str(trimmed), str(out.with_suffix(".ipynb")),
                            parameters=dict(params, out_dir=str(out), cluster=cluster),
                            progress_bar=False, cwd=str(tmp_path))
        tables.append(pd.read_parquet(out / "prompts" / "results.parquet"))
    assert len(tables[0]) == 2 and tables[1]["process"].str.startswith("ray:").all()
    pd.testing.assert_frame_equal(comparable(tables[1]), comparable(tables[0]),
                                  check_like=True)


def test_kaggle_shards_staged_run_and_merge_into_the_whole(tmp_path, capsys):
    """`pegu kaggle push 01_model_comparison --shards 2 --resume --dry-run`: two kernels,
    each with its share, title, id and its own earlier output attached; each staged
    notebook's sweep cell (after Kaggle's setup cell) run by papermill, and the two outputs
    merged: the table of the unsharded notebook."""
    import json

    import papermill as pm

    from pegu.cli.kernels import validate_metadata

    staging = tmp_path / "staged"
    assert main(["kaggle", "push", "01_model_comparison", "--shards", "2", "--resume",
                 "--dry-run", "--staging", str(staging), "--username", "alice"]) == 0
    said = capsys.readouterr().out
    assert "pegu sweep merge" in said
    folders = sorted(staging.iterdir())
    assert [f.name for f in folders] == ["01_model_comparison-shard-1-of-2",
                                        "01_model_comparison-shard-2-of-2"]
    params = dict(models=["tiny-sd15"], prompts=["portrait of an old man"], seeds=[0, 1, 2],
                  steps=1, size=128, target=256, upscaler="realesr-animevideov3",
                  clip_model="", iqa=[])
    outs = []
    for i, folder in enumerate(folders):
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert not validate_metadata(meta, folder)
        assert meta["id"] == f"alice/pegu-01-model-comparison-shard-{i + 1}-of-2"
        assert meta["kernel_sources"] == [meta["id"]]  # its own earlier version
        nb = json.loads((folder / meta["code_file"]).read_text())
        injected = next("".join(c["source"]) for c in nb["cells"]
                        if "injected-parameters" in c["metadata"].get("tags", []))
        assert f"shard = '{i}/2'" in injected and "resume_from = 'attached'" in injected
        cut = next(k for k, c in enumerate(nb["cells"])
                   if "pegu.sweep.sweep(grid" in "".join(c["source"]))
        cells = [c for c in nb["cells"][1:cut + 1]  # after Kaggle's setup cell
                 if "injected-parameters" not in c["metadata"].get("tags", [])]
        at = next(k for k, c in enumerate(cells)
                  if "parameters" in c["metadata"].get("tags", []))
        # the kernel's own values, as a plain cell after papermill's (which replaces any
        # cell tagged injected-parameters); no earlier version exists here to resume from
        cells.insert(at + 1, {"cell_type": "code", "id": "kernel-values", "metadata": {},
                              "outputs": [], "execution_count": None,
                              "source": injected.replace("resume_from = 'attached'",
                                                         "resume_from = ''")})
        trimmed = tmp_path / f"shard{i}.ipynb"
        trimmed.write_text(json.dumps(dict(nb, cells=cells)))
        out = tmp_path / f"kernel{i}"
        pm.execute_notebook(str(trimmed), str(tmp_path / f"shard{i}.out.ipynb"),
                            parameters=dict(params, out_dir=str(out)), progress_bar=False,
                            cwd=str(tmp_path))
        outs.append(out / "prompts")
    assert [len(pd.read_parquet(o / "results.parquet")) for o in outs] == [2, 1]
    merged = tmp_path / "merged"
    assert main(["sweep", "merge", *map(str, outs), "--out", str(merged)]) == 0
    # the unsharded notebook's sweep of the same grid
    whole = tmp_path / "whole"
    assert main(["sweep", "--grid", str(merged / "grid.json"), "--out", str(whole),
                 "--no-clip", "--no-progress"]) == 0
    pd.testing.assert_frame_equal(comparable(pd.read_parquet(merged / "results.parquet")),
                                  comparable(pd.read_parquet(whole / "results.parquet")),
                                  check_like=True)
