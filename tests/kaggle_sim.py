"""The Kaggle simulation: pegu's kernels run as a user runs them, from a clean image, on the CPU.

1. The image: a virtualenv holding only ``tests/data/kaggle-image.txt`` (Kaggle's packages that
   pegu touches; nothing of pegu's), built once into ``.kaggle-sim/image/``; torch's CUDA stack
   is the running environment's, seen through ``.kaggle-sim/torch-layer/`` (5 GB not installed
   twice).
2. The inputs: ``pegu kaggle package`` writes the dataset where Kaggle mounts datasets since
   2026, ``<input>/datasets/<owner>/pegu-wheels/``; ``<input>`` stands in for ``/kaggle/input``.
   The notebooks' CLIP (a tiny one, saved as a transformers folder) is attached as users
   attach models: notebook 01's as a Kaggle model under its slug (case folded:
   ``models/<owner>/clip-vit-h-14-laion2b-s32b-b79k/transformers/default/1/`` for
   ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``), notebook 02's nested one folder deep in a
   dataset (``datasets/<owner>/pegu-metric-models/clip-vit-base-patch32/``), as Kaggle
   unpacks an upload made with ``kaggle datasets create --dir-mode zip``.
3. The kernels: ``pegu kaggle push --dry-run`` stages each notebook, setup cell first.
4. Each internet mode: a fresh virtualenv layered on the image (its own site-packages first,
   the image's behind, as pip installs on Kaggle land over the image's), with
   ``KAGGLE_KERNEL_RUN_TYPE=Batch`` (and, as on Kaggle, no ``PEGU_OFFLINE``: the Hub is out
   of reach from here, so pegu must find that out and take the attached CLIP); papermill
   executes every staged notebook top to bottom on the tiny models and the real x4plus
   weights. "on": pip may
   reach the package index; "off": the index is an address that refuses connections, so
   only the dataset can serve pip, as on a kernel with the internet off.
5. Kaggle's Python is 3.12 and this machine's 3.11: torch for 3.12 only comes as a CUDA
   build of several GB from PyPI, too much to fetch per CI run, so the kernels run on 3.11;
   but where a Python 3.12 is installed (pyenv's here), the dataset's wheels install into a
   3.12 virtualenv with pip ``--no-index`` (beside the image's numpy, tqdm and packaging),
   every module they hold compiles, and the first cell's modules (pegu.cli.kaggle, which
   imports no torch) import and find the inputs.

    python tests/kaggle_sim.py [--mode on|off|both] [--work DIR]     # or: make kaggle-sim
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE_LIST = ROOT / "tests" / "data" / "kaggle-image.txt"
OWNER = "sim"
# small parameters: tiny-sd15 (random weights) at 64², the real x4plus to 256²
PARAMETERS = {
    "01_model_comparison": dict(
        models=["tiny-sd15"], prompts=["portrait of an old man"], seeds=[0], steps=2,
        size=64, target=256, upscaler="RealESRGAN_x4plus", attribute_values=["red", "black"],
        clip_model="laion/CLIP-ViT-H-14-laion2B-s32B-b79K", frontier_distill=["", "lcm"],
        frontier_ways=["upscale"]),
    "02_upscaling_walkthrough": dict(
        model="tiny-sd15", steps=2, size=64, target=256, upscaler="RealESRGAN_x4plus",
        photo_size=64, tiles=[64], repeats=1, refine=0.3,
        clip_model="openai/clip-vit-base-patch32"),
    "03_explorer": dict(model="tiny-sd15", upscaler="RealESRGAN_x4plus", device="cpu"),
}
NO_INDEX = "http://127.0.0.1:9/simple/"  # the discard port: refused at once, like no internet


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n"
                           f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def _site(venv: Path, version: str | None = None) -> Path:
    version = version or f"{sys.version_info[0]}.{sys.version_info[1]}"
    return venv / "lib" / f"python{version}" / "site-packages"


# torch's CUDA stack (~5 GB) is not installed a second time: the image sees the running
# environment's copy through a folder of links outside the image (pip never writes outside its
# environment), pinned by a constraint so that pip fails rather than installs another torch.
_HEAVY = ("cuda-", "nvidia-")
_HEAVY_NAMES = {"torch", "torchvision", "triton"}


def _torch_layer(layer: Path) -> list[str]:
    """Links to the running environment's torch stack in ``layer``; its pins (none if absent)."""
    import importlib.metadata as md

    shutil.rmtree(layer, ignore_errors=True)
    names = {d: (d.metadata["Name"] or "").lower().replace("_", "-") for d in md.distributions()}
    dists = [d for d, n in names.items() if n in _HEAVY_NAMES or n.startswith(_HEAVY)]
    if not any(d.metadata["Name"].lower() == "torch" for d in dists):
        return []
    owners: dict[str, set] = {}
    for d in dists:
        for f in d.files or ():
            owners.setdefault(f.parts[0], set()).add(d.metadata["Name"])
    for d in dists:
        for f in d.files or ():
            if f.parts[0] == ".." or f.parts[0].endswith(".pth"):
                continue
            shared = len(owners[f.parts[0]]) > 1 and len(f.parts) > 1
            rel = Path(*f.parts[:2]) if shared else Path(f.parts[0])
            dst = layer / rel
            if not os.path.lexists(dst):
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(Path(d.locate_file(rel)).resolve())
    return sorted({f"{d.metadata['Name']}=={d.version}" for d in dists})


def image(work: Path) -> Path:
    """The image virtualenv (built once per package list and linked torch stack)."""
    venv = work / "image"
    layer = work / "torch-layer"
    pins = _torch_layer(layer)
    want = hashlib.sha256(IMAGE_LIST.read_bytes() + " ".join(pins).encode()).hexdigest()
    stamp = venv / ".image-stamp"
    if stamp.is_file() and stamp.read_text() == want:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", venv])
    constraints = work / "torch-pins.txt"
    constraints.write_text("".join(f"{pin}\n" for pin in pins))
    if pins:
        (_site(venv) / "torch_layer.pth").write_text(f"{layer}\n")
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-r", IMAGE_LIST, "-c", constraints])
    stamp.write_text(want)
    return venv


def dataset(work: Path) -> Path:
    """``pegu kaggle package`` into the stand-in input root's datasets/<owner>/ layout."""
    inputs = work / "input"
    out = inputs / "datasets" / OWNER / "pegu-wheels"
    shutil.rmtree(inputs, ignore_errors=True)
    out.parent.mkdir(parents=True)
    _run([Path(sys.executable).parent / "pegu", "kaggle", "package", "--out", out,
          "--username", OWNER])
    for mount in CLIP_MOUNTS:
        _tiny_clip_folder(inputs / mount)
    return inputs


# where the tiny CLIP is attached: a Kaggle model under its (case-folded) slug, and a folder
# nested in a dataset
CLIP_MOUNTS = (f"models/{OWNER}/clip-vit-h-14-laion2b-s32b-b79k/transformers/default/1",
               f"datasets/{OWNER}/pegu-metric-models/clip-vit-base-patch32")


def _tiny_clip_folder(folder: Path) -> None:
    """The tests' tiny CLIP saved as a transformers folder (config.json, weights, tokenizer,
    image processor), as a user attaches a real one."""
    from pegu.lab.metrics import load_clip

    clip = load_clip("tiny-clip", device="cpu")
    folder.mkdir(parents=True)
    for part in (clip.model, clip.tokenizer, clip.image_processor):
        part.save_pretrained(folder)


def python312() -> Path | None:
    """A Python 3.12 on this machine (on PATH, else pyenv's), or None."""
    found = shutil.which("python3.12")
    candidates = ([found] if found else []) + sorted(
        str(p) for p in Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob(
            "versions/3.12*/bin/python3.12"))
    for c in candidates:
        r = subprocess.run([c, "--version"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.startswith("Python 3.12"):
            return Path(c)
    return None


def on_python312(work: Path, inputs: Path) -> str | None:
    """The dataset on Kaggle's Python (see 5. above); what the first cell's modules found,
    or None without a Python 3.12."""
    py = python312()
    if py is None:
        return None
    venv = work / "python3.12"
    shutil.rmtree(venv, ignore_errors=True)
    _run([py, "-m", "venv", venv])
    wheels = sorted((inputs / "datasets" / OWNER / "pegu-wheels").glob("*.whl"))
    python = venv / "bin" / "python"
    # what the first cell's modules import from the image (its pins, from the package index)
    pins = [line for line in IMAGE_LIST.read_text().splitlines()
            if line.split("==")[0] in ("numpy", "tqdm", "packaging")]
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins])
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
          "--no-deps", *wheels])
    _run([python, "-m", "compileall", "-q", _site(venv, "3.12")])
    probe = ("import sys, pegu.cli.kaggle as k, pegu.sources.kaggle as s; "
             f"print(sys.version.split()[0], [p.name for p in s.find_attached('{SETUP_PROBE}')],"
             " len(k.KERNEL_NEEDS))")
    env = dict(os.environ, PEGU_KAGGLE_INPUT=str(inputs))
    return _run([python, "-c", probe], env=env).stdout.strip()


SETUP_PROBE = "pegu_kaggle_setup.py"


def staged(work: Path) -> dict[str, Path]:
    """Each notebook as ``pegu kaggle push --dry-run`` stages it."""
    stage = work / "staged"
    shutil.rmtree(stage, ignore_errors=True)
    _run([Path(sys.executable).parent / "pegu", "kaggle", "push", "--dry-run", "--username",
          OWNER, "--staging", stage])
    return {p.parent.name: p for p in sorted(stage.glob("*/*.ipynb"))}


@dataclass
class KernelRun:
    """What one internet mode did: setup: each notebook's first-cell output; installed:
    the distributions the kernels added over the image; pngs: images each notebook wrote;
    statuses: the status column of every results table a notebook wrote."""

    mode: str
    setup: dict[str, str] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)
    pngs: dict[str, list[str]] = field(default_factory=dict)
    statuses: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, set] = field(default_factory=dict)
    seconds: float = 0.0
    python312: str | None = None


def _column(csv: Path, name: str) -> list[str]:
    import csv as csvlib

    with open(csv, newline="") as f:
        return [row[name] for row in csvlib.DictReader(f)]


def kernel_env(work: Path, venv: Path, inputs: Path, mode: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PEGU_", "HF_", "KAGGLE_", "VIRTUAL_ENV"))}
    # no PEGU_OFFLINE: Kaggle sets none; pegu must find out by itself that the Hub is out of
    # reach (as it is from here, in both modes)
    env.update(KAGGLE_KERNEL_RUN_TYPE="Batch", PEGU_KAGGLE_INPUT=str(inputs),
               PEGU_CACHE=str(work / "cache"), HF_HOME=str(work / "hf"),
               PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               VIRTUAL_ENV=str(venv), MPLBACKEND="agg", PYTHONNOUSERSITE="1")
    for keep in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    if mode == "off":
        env["PIP_INDEX_URL"] = NO_INDEX
    return env


def kernel(work: Path, image_venv: Path, inputs: Path, notebooks: dict[str, Path],
           mode: str) -> KernelRun:
    """A fresh kernel environment over the image; every staged notebook through papermill."""
    t0 = time.perf_counter()
    run = KernelRun(mode)
    base = work / f"internet-{mode}"
    shutil.rmtree(base, ignore_errors=True)
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    site = _site(venv)
    (site / "kaggle_image.pth").write_text(
        "".join(f"{p}\n" for p in [_site(image_venv), work / "torch-layer"] if p.exists()))
    env = kernel_env(base, venv, inputs, mode)
    for name, notebook in notebooks.items():
        out_dir = base / "working" / name
        out_dir.mkdir(parents=True)
        executed = base / f"{name}.ipynb"
        params = dict(PARAMETERS[name], out_dir=str(out_dir))
        cmd = [venv / "bin" / "python", "-m", "papermill", notebook, executed, "-y",
               json.dumps(params), "--cwd", out_dir, "--no-progress-bar"]
        # each kernel is its own Kaggle session, starting when it is launched (this
        # machine's first process may be days old: Kaggle's 12-hour deadline would be past)
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                           env=dict(env, PEGU_KAGGLE_SESSION_START=str(time.time())),
                           cwd=str(out_dir))
        nb = json.loads(executed.read_text()) if executed.is_file() else {"cells": []}
        first = nb["cells"][0] if nb["cells"] else {"outputs": []}
        run.setup[name] = "".join(o.get("text", "") if isinstance(o.get("text"), str)
                                  else "".join(o.get("text", []))
                                  for o in first.get("outputs", []))
        if r.returncode:
            raise RuntimeError(f"internet {mode}: {name} failed (papermill exit "
                               f"{r.returncode}); setup said:\n{run.setup[name]}\n"
                               f"{r.stderr[-6000:]}")
        run.pngs[name] = sorted(p.name for p in out_dir.rglob("*.png"))
        run.statuses[name] = [status for table in sorted(out_dir.rglob("results.csv"))
                              for status in _column(table, "status")]
        run.columns[name] = {c for table in out_dir.rglob("results.csv")
                             for c in table.read_text().splitlines()[0].split(",")}
    run.installed = sorted(p.name.split("-")[0].lower() for p in site.glob("*.dist-info"))
    run.seconds = time.perf_counter() - t0
    return run


def simulate(modes=("on", "off"), work: Path | None = None) -> list[KernelRun]:
    """Image, dataset and staged kernels once; then each internet mode from a fresh kernel."""
    work = Path(work or ROOT / ".kaggle-sim").resolve()
    work.mkdir(parents=True, exist_ok=True)
    image_venv = image(work)
    inputs = dataset(work)
    notebooks = staged(work)
    runs = [kernel(work, image_venv, inputs, notebooks, mode) for mode in modes]
    runs[0].python312 = on_python312(work, inputs)
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("on", "off", "both"), default="both",
                   help="internet on, off, or both (default)")
    p.add_argument("--work", type=Path, help="working folder (default .kaggle-sim/)")
    args = p.parse_args(argv)
    modes = ("on", "off") if args.mode == "both" else (args.mode,)
    for run in simulate(modes, args.work):
        print(f"internet {run.mode}: {len(run.pngs)} kernels ran in {run.seconds:.0f} s; "
              f"installed over the image: {', '.join(run.installed)}")
        if run.python312 is not None:
            print(f"  Python 3.12: the dataset installs and compiles; the first cell's "
                  f"modules found {run.python312}")
        for name, text in run.setup.items():
            print(f"  {name}: setup said: {text.strip().splitlines()[-1] if text.strip() else ''}")
            print(f"  {name}: wrote {', '.join(run.pngs[name]) or 'no PNG'}; runs: "
                  f"{', '.join(run.statuses[name]) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
