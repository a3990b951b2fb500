"""The Kaggle first-cell decision, from simulated nvidia-smi output and torch arch lists."""
from __future__ import annotations

import sys

import pytest

from pegu.kaggle import CU126_INDEX, parse_nvidia_smi, prepare, setup_plan

P100 = "Tesla P100-PCIE-16GB, 6.0, 16384\n"
T4x2 = "Tesla T4, 7.5, 15360\nTesla T4, 7.5, 15360\n"
L4 = "NVIDIA L4, 8.9, 23034\n"
CU128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.fixture()
def wheels(tmp_path):
    (tmp_path / "pegu-0.1.0-py3-none-any.whl").write_bytes(b"")
    return tmp_path


def test_parse_nvidia_smi():
    gpus = parse_nvidia_smi(T4x2)
    assert len(gpus) == 2 and gpus[0].name == "Tesla T4" and gpus[0].capability == (7, 5)
    assert parse_nvidia_smi(P100)[0].memory_mib == 16384
    assert parse_nvidia_smi("") == []


def test_p100_with_cu128_torch_and_internet_installs_cu126(wheels):
    plan = setup_plan(parse_nvidia_smi(P100), CU128, "2.9.1+cu128", "0.24.1+cu128", True,
                      wheels)
    assert plan.stop is None
    torch_cmd, pegu_cmd = plan.commands
    assert torch_cmd[-4:] == ["torch==2.9.1", "torchvision==0.24.1", "--index-url",
                              CU126_INDEX]
    assert pegu_cmd[-1] == "pegu" and "--no-index" not in pegu_cmd


def test_p100_with_cu128_torch_offline_stops_with_the_switch(wheels):
    plan = setup_plan(parse_nvidia_smi(P100), CU128, "2.9.1+cu128", "0.24.1", False, wheels)
    assert plan.commands == [] and "switch the accelerator to GPU T4 x2 or L4" in plan.stop


def test_p100_with_cu126_torch_only_installs_pegu(wheels):
    plan = setup_plan(parse_nvidia_smi(P100), CU126, "2.9.1+cu126", "0.24.1", False, wheels)
    assert plan.stop is None and len(plan.commands) == 1
    assert "--no-index" in plan.commands[0] and str(wheels) in plan.commands[0]


@pytest.mark.parametrize("smi", [T4x2, L4, ""], ids=["T4", "L4", "CPU"])
@pytest.mark.parametrize("internet", [True, False])
def test_t4_l4_cpu_need_no_torch(smi, internet, wheels):
    plan = setup_plan(parse_nvidia_smi(smi), CU128, "2.9.1+cu128", "0.24.1", internet, wheels)
    assert plan.stop is None and len(plan.commands) == 1 and plan.commands[0][-1] == "pegu"
    assert ("--no-index" in plan.commands[0]) == (not internet)
    if not smi:
        assert "no GPU" in plan.notes[0]


def test_without_the_wheel_dataset_it_says_what_to_attach():
    plan = setup_plan(parse_nvidia_smi(L4), CU128, "2.9.1", "0.24.1", True, None)
    assert "pegu kaggle package" in plan.stop
    ok = setup_plan(parse_nvidia_smi(L4), CU128, "2.9.1", "0.24.1", True, None,
                    pegu_installed=True)
    assert ok.stop is None and ok.commands == []


def test_prepare_does_nothing_outside_kaggle(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr("pegu.kaggle.on_kaggle", lambda: False)
    assert prepare().notes == ["not on Kaggle: nothing to prepare"]


def test_prepare_never_imports_torch_in_the_kernel():
    import subprocess

    code = ("import sys, pegu.kaggle as k; k.on_kaggle = lambda: True; "
            "k._facts = lambda: (k.parse_nvidia_smi('NVIDIA L4, 8.9, 23034'), ['sm_89'], "
            "'2.9.1', '0.24.1'); k._internet = lambda: False; "
            "k.prepare(wheels=sys.argv[1], dry_run=True); print('torch' in sys.modules)")
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    (d / "pegu-0.1.0-py3-none-any.whl").write_bytes(b"")
    r = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False"


# ---- kernels and the wheel dataset ----

import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from pegu.kaggle import (ACCELERATORS, BOOTSTRAP_CELL, SETUP_SCRIPT, package,  # noqa: E402
                         push, repo_root, slugify, validate_metadata)

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("folder", sorted(p for p in (ROOT / "kaggle").iterdir() if p.is_dir()),
                         ids=lambda p: p.name)
def test_every_metadata_file_is_what_kaggle_reads(folder):
    meta = json.loads((folder / "kernel-metadata.json").read_text().replace("USERNAME", "u"))
    assert validate_metadata(meta) == []
    assert meta["kernel_type"] == "notebook" and meta["machine_shape"] in ACCELERATORS
    assert (ROOT / "notebooks" / meta["code_file"]).is_file()  # staged at push time
    assert not (folder / meta["code_file"]).exists()           # not copied into the repo
    assert "u/pegu-wheels" in meta["dataset_sources"]


def test_validation_catches_what_kaggle_rejects():
    good = json.loads((ROOT / "kaggle" / "03_explorer" / "kernel-metadata.json")
                      .read_text().replace("USERNAME", "u"))
    assert slugify("pegu 03 Explorer") == "pegu-03-explorer"
    bad = dict(good, title="pegu", id="u/other-slug", dataset_sources=["no-owner"],
               model_sources=["google/gemma"], machine_shape="TPU", enable_gpu="yes")
    problems = " | ".join(validate_metadata(bad))
    for words in ("title must be 5 to 50", "id must be <username>/pegu", "<owner>/<slug>",
                  "<owner>/<model>/<framework>/<variation>", "machine_shape must be",
                  "enable_gpu must be bool"):
        assert words in problems
    assert "code_file" in " ".join(validate_metadata(good, ROOT))


def test_push_dry_run_stages_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    done = push([], accelerator="NvidiaTeslaP100", internet=False, dry_run=True,
                staging=tmp_path)
    assert len(done) == 3
    for folder, cmd in done:
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        assert meta["id"].startswith("alice/") and meta["enable_internet"] is False
        assert meta["machine_shape"] == "NvidiaTeslaP100" and validate_metadata(meta, folder) == []
        nb = json.loads((folder / meta["code_file"]).read_text())
        assert "".join(nb["cells"][0]["source"]) == BOOTSTRAP_CELL
        assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"][1:])
        assert cmd == ["kaggle", "kernels", "push", "-p", str(folder), "--accelerator",
                       "NvidiaTeslaP100"]
    assert capsys.readouterr().out.count("would run: kaggle kernels push") == 3
    with pytest.raises(ValueError, match="unknown notebook 'nope'"):
        push(["nope"], dry_run=True, staging=tmp_path)


def test_cli_push_needs_a_username(tmp_path):
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_USERNAME"}
    env["KAGGLE_CONFIG_DIR"] = str(tmp_path)
    exe = Path(sys.executable).parent / "pegu"
    r = subprocess.run([str(exe), "kaggle", "push", "--dry-run"], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and "set KAGGLE_USERNAME" in r.stderr
    r = subprocess.run([str(exe), "kaggle", "push", "01_model_comparison", "--dry-run",
                        "--username", "bob"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "bob/pegu-01-model-comparison" in r.stdout


def test_package_builds_an_installable_dataset(tmp_path):
    out = package(tmp_path / "ds", extras=(), username="alice")
    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].startswith("pegu-")
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/pegu-wheels" and (out / SETUP_SCRIPT).is_file()
    # the wheel installs and carries the package (into a throw-away target folder)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(out / wheels[0])], check=True)
    assert (target / "pegu" / "kaggle.py").is_file() and (target / "pegu" / "upscale.py").is_file()
    assert repo_root() == ROOT


def test_attached_kaggle_inputs_are_found_by_name(tmp_path, monkeypatch):
    import torch

    import pegu
    from pegu.generate import kaggle_model_dir
    from pegu.upscale import _network

    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path))
    vae = tmp_path / "sd-vae-ft-mse" / "vae"
    vae.mkdir(parents=True)
    (vae / "config.json").write_text("{}")
    assert kaggle_model_dir("stabilityai/sd-vae-ft-mse", marker="config.json") == vae
    # an upscaler's official file in a dataset (no published checksum for animevideov3)
    spec = pegu.registry.upscaler_spec("realesr-animevideov3")
    state = _network(spec.arch, spec.kwargs()).state_dict()
    (tmp_path / "weights").mkdir()
    torch.save({"params": state}, tmp_path / "weights" / spec.filename)
    up = pegu.load_upscaler(spec.name, device="cpu", offline=True)
    assert up.source == str(tmp_path / "weights" / spec.filename)
