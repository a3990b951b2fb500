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
