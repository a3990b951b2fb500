"""`pegu doctor` reports the facts of the machine it runs on."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

from pegu.cli.doctor import LEGEND, Check, checks, report


def test_doctor_reports_this_machine(monkeypatch):
    monkeypatch.setenv("PEGU_OFFLINE", "1")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    items = {c.name: c for c in checks(hub_timeout=2)}
    assert items["python"].detail == platform.python_version()
    assert items["torch"].detail.startswith(torch.__version__)
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in items["gpu"].detail
    else:
        assert items["gpu"].status == "info" and "CPU" in items["gpu"].detail
        assert "GPU T4 x2" in items["gpu"].fix
        assert items["fp16"].detail.startswith("not on the CPU")
    assert "RealESRGAN_x4plus" in items["upscaler weights"].detail  # the offline copies
    for name in ("basicsr", "realesrgan", "ipywidgets", "peft"):
        assert items[name].status == "ok", items[name]
    assert items["hub"].status == "info" and "offline mode" in items["hub"].detail


def test_a_missing_package_is_a_problem_with_its_fix(monkeypatch):
    from pegu.cli.doctor import _packages

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails, as when absent

    item = {c.name: c for c in _packages()}["ipywidgets"]
    assert item.status == "problem" and "pip install ipywidgets" in item.fix


def test_kaggle_inputs_are_reported(tmp_path, monkeypatch):
    from pegu.cli.doctor import _kaggle_inputs

    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path))
    assert _kaggle_inputs().status == "warn"  # nothing attached
    models = tmp_path / "models" / "u" / "rv6" / "pytorch" / "default" / "1"
    models.mkdir(parents=True)
    item = _kaggle_inputs()
    assert item.status == "warn" and "not the pegu-wheels dataset" in item.detail
    dataset = tmp_path / "datasets" / "u" / "pegu-wheels"
    dataset.mkdir(parents=True)
    (dataset / "pegu_kaggle_setup.py").write_text("")
    item = _kaggle_inputs()
    assert item.status == "ok" and item.detail.startswith("2 attached")
    assert "datasets/u/pegu-wheels" in item.detail


def test_report_has_a_legend_and_counts_problems_and_warnings():
    text = report([Check("kernels", "problem", "torch has no kernels", "pip install torch..."),
                   Check("hub", "warn", "not reachable", "set PEGU_OFFLINE=1"),
                   Check("python", "ok", "3.11")])
    assert text.startswith(LEGEND) and "[XX] missing" in LEGEND and "[!!]" in LEGEND
    assert "[XX] kernels" in text and "fix: pip install torch..." in text
    assert text.endswith("1 problem(s), 1 warning(s)")
    assert report([Check("python", "ok", "3.11")]).endswith("no problems, no warnings")


def test_cli_doctor_is_quick_and_exits_0_without_problems():
    exe = Path(sys.executable).parent / "pegu"
    r = subprocess.run([str(exe), "doctor"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert "[ok] python" in r.stdout and "no problems" in r.stdout
    assert r.stdout.startswith("[ok] works")
