"""`pegu doctor` reports the facts of the machine it runs on."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

from pegu.doctor import Check, checks, report


def test_doctor_reports_this_machine(monkeypatch):
    monkeypatch.delenv("PEGU_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    items = {c.name: c for c in checks(hub_timeout=2)}
    assert items["python"].detail == platform.python_version()
    assert items["torch"].detail.startswith(torch.__version__)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        assert name in items["gpu"].detail and items["kernels"].status in ("ok", "problem")
    else:
        assert items["gpu"].status == "info" and "CPU" in items["gpu"].detail
        assert items["fp16"].detail.startswith("not on the CPU")
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        has_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
        assert (items["bf16"].status == "ok") == has_bf16
    assert "RealESRGAN_x4plus" in items["upscaler weights"].detail  # the offline copies
    assert items["basicsr"].status == "ok"
    assert items["hub"].status in ("ok", "warn")  # offline machines get the fix
    if items["hub"].status == "warn":
        assert "PEGU_OFFLINE=1" in items["hub"].fix


def test_report_shows_problems_with_fixes():
    text = report([Check("kernels", "problem", "torch has no kernels", "pip install torch..."),
                   Check("python", "ok", "3.11")])
    assert "[XX] kernels" in text and "fix: pip install torch..." in text
    assert text.endswith("1 problem(s)")


def test_cli_doctor_is_quick_and_exits_0_without_problems():
    exe = Path(sys.executable).parent / "pegu"
    r = subprocess.run([str(exe), "doctor"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    assert "[ok] python" in r.stdout and "no problems found" in r.stdout
