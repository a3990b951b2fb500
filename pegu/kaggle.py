"""Kaggle: what a kernel must install before torch is imported, decided from the facts.

Kaggle's default image ships a torch without Pascal (sm_60) kernels since March 2026: on a
P100 CUDA is "available" and the first kernel fails. The cu126 wheels still carry sm_60.
``setup_plan`` decides from ``nvidia-smi`` output, the installed torch's arch list, whether
the internet is on and whether pegu's wheel dataset is attached; ``prepare`` carries it out.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

CU126_INDEX = "https://download.pytorch.org/whl/cu126"


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]
    memory_mib: int


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from ``nvidia-smi --query-gpu=name,compute_cap,memory.total
    --format=csv,noheader,nounits`` (empty output: no GPU)."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[1].replace(".", "").isdigit():
            continue
        major, _, minor = parts[1].partition(".")
        gpus.append(Gpu(parts[0], (int(major), int(minor or 0)), int(float(parts[2]))))
    return gpus


@dataclass
class SetupPlan:
    """commands: pip invocations to run, in order. stop: a message to stop with (the kernel
    cannot work as configured). notes: what was decided and why."""

    commands: list[list[str]] = field(default_factory=list)
    stop: str | None = None
    notes: list[str] = field(default_factory=list)


def setup_plan(gpus: list[Gpu], arch_list: list[str], torch_version: str,
               torchvision_version: str | None, internet: bool, wheels: Path | None,
               pegu_installed: bool = False) -> SetupPlan:
    """Decide what a Kaggle kernel installs before importing torch.

    gpus: from :func:`parse_nvidia_smi`; arch_list: ``torch.cuda.get_arch_list()`` of the
    installed torch (read in a subprocess, so this kernel's torch stays unimported);
    wheels: the attached pegu wheel dataset (``pegu kaggle package``), if any.
    """
    from .device import gpu_problem

    plan = SetupPlan()
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if not gpus:
        plan.notes.append("no GPU: pegu runs on the CPU (fp32, slow for real models); pick "
                          "the T4 x2, L4 or P100 accelerator for real work")
    for gpu in gpus[:1]:
        problem = gpu_problem(gpu.capability, arch_list, torch_version, torchvision_version)
        if problem is None:
            plan.notes.append(f"{gpu.name} (sm_{gpu.capability[0]}{gpu.capability[1]}): the "
                              f"installed torch {torch_version} runs on it")
        elif internet:
            base = torch_version.split("+")[0]
            vision = (f"torchvision=={torchvision_version.split('+')[0]}"
                      if torchvision_version else "torchvision")
            plan.commands.append(pip + [f"torch=={base}", vision, "--index-url", CU126_INDEX])
            plan.notes.append(f"{gpu.name}: the installed torch {torch_version} has no "
                              f"sm_{gpu.capability[0]}{gpu.capability[1]} kernels; installing "
                              "the cu126 build, which has them")
        else:
            plan.stop = (f"This {gpu.name} needs a torch with sm_{gpu.capability[0]}"
                         f"{gpu.capability[1]} kernels and the installed {torch_version} has "
                         "none; with internet off pegu cannot install one. In the notebook's "
                         "settings switch the accelerator to GPU T4 x2 or L4 (or turn the "
                         "internet on), then restart.")
            return plan
    if pegu_installed:
        plan.notes.append("pegu is already installed")
    elif wheels is not None and any(Path(wheels).glob("pegu-*.whl")):
        source = ["--find-links", str(wheels)] + ([] if internet else ["--no-index"])
        plan.commands.append(pip + source + ["pegu"])
        plan.notes.append(f"installing pegu from {wheels}"
                          + ("" if internet else " (offline: its wheels only)"))
    else:
        plan.stop = ("pegu is not installed and its wheel dataset is not attached: add the "
                     "dataset built by `pegu kaggle package` (Add Input → Datasets), then run "
                     "this cell again.")
    return plan


def on_kaggle() -> bool:
    """True inside a Kaggle kernel."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or Path("/kaggle/input").is_dir()


def _internet(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _facts() -> tuple[list[Gpu], list[str], str, str | None]:
    """(GPUs, torch arch list, torch and torchvision versions), torch read in a subprocess."""
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        smi = ""
    probe = ("import torch, torchvision; print(torch.__version__); "
             "print(torchvision.__version__); print(' '.join(torch.cuda.get_arch_list()))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=300).stdout.splitlines()
    out += [""] * (3 - len(out))
    return parse_nvidia_smi(smi), out[2].split(), out[0] or "unknown", out[1] or None


def prepare(wheels: str | Path | None = None, dry_run: bool = False) -> SetupPlan:
    """The notebooks' first cell on Kaggle: decide (see :func:`setup_plan`) and install.
    Does nothing outside Kaggle. Raises SystemExit with the instruction when the kernel
    cannot work as configured."""
    if not on_kaggle():
        return SetupPlan(notes=["not on Kaggle: nothing to prepare"])
    if wheels is None:
        found = sorted(Path("/kaggle/input").glob("*/pegu-*.whl"))
        wheels = found[0].parent if found else None
    import importlib.util

    gpus, arch, tv, tvv = _facts()
    plan = setup_plan(gpus, arch, tv, tvv, _internet(), Path(wheels) if wheels else None,
                      pegu_installed=importlib.util.find_spec("pegu") is not None)
    for note in plan.notes:
        print(note)
    if plan.stop:
        raise SystemExit(plan.stop)
    for cmd in plan.commands:
        print("$", " ".join(cmd))
        if not dry_run:
            subprocess.run(cmd, check=True)
    return plan
