"""What a Kaggle kernel has attached under /kaggle/input, in every layout Kaggle mounts."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

INPUT_ENV = "PEGU_KAGGLE_INPUT"  # tests and the simulation point the input root elsewhere


def input_root() -> Path:
    """Where Kaggle mounts a kernel's inputs: ``/kaggle/input``, or ``$PEGU_KAGGLE_INPUT``."""
    return Path(os.environ.get(INPUT_ENV) or "/kaggle/input")


def attached_inputs(root: str | Path | None = None) -> list[Path]:
    """The folder of each attached input, in every layout Kaggle mounts:
    ``datasets/<owner>/<slug>/`` (since 2026), ``models/<owner>/<model>/<framework>/
    <variation>/<version>/``, ``notebooks/<owner>/<slug>/`` (a kernel's output),
    ``competitions/<slug>/``, and the older ``<slug>/``."""
    root = Path(root) if root is not None else input_root()
    if not root.is_dir():
        return []
    depth = {"datasets": 2, "models": 5, "notebooks": 2, "competitions": 1}
    found = []
    for top in sorted(p for p in root.iterdir() if p.is_dir()):
        levels = depth.get(top.name)
        if levels is None:
            found.append(top)
        else:
            found += sorted(p for p in top.glob("/".join(["*"] * levels)) if p.is_dir())
    return found


def find_attached(pattern: str, root: str | Path | None = None, depth: int = 4) -> list[Path]:
    """Files or folders named like the glob ``pattern`` (e.g. ``"pegu-*.whl"``,
    ``"model_index.json"``) inside the attached inputs, at most ``depth`` folders down each
    input, in a stable order."""
    hits = []
    for base in attached_inputs(root):
        for level in range(depth + 1):
            hits += sorted(base.glob("/".join(["*"] * level + [pattern])))
    return hits


def on_kaggle() -> bool:
    """True inside a Kaggle kernel (or a simulation of one)."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or Path("/kaggle/input").is_dir()


def slug(name: str) -> str:
    """A name as a Kaggle slug: lowercase, every run of other characters than letters and
    digits one dash (Kaggle's URL slugs: a model attached as ``Realistic_Vision_V6.0_B1_noVAE``
    is mounted as ``realistic-vision-v6-0-b1-novae``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def repo_folder(repo: str, marker: str = "model_index.json") -> Path | None:
    """A folder for Hugging Face repo ``repo`` in an attached input: one holding ``marker``
    (model_index.json for a pipeline, config.json for a single model) whose path names the
    repo however Kaggle spelled it — the repo's own folder name or its slug, case folded, in
    any part of the path (``.../models/<owner>/stable-diffusion-xl-base-1-0/diffusers/...``,
    ``.../datasets/<owner>/<slug>/Realistic_Vision_V6.0_B1_noVAE/``) — else, in a folder
    named otherwise, whose marker names it (:func:`named_in`; not a pipeline's component)."""
    want = f"-{slug(repo.split('/')[-1])}-"
    markers = find_attached(marker, depth=6)
    for index in markers:
        if want in f"-{slug(str(index.parent))}-":
            return index.parent
    for index in markers:  # a folder named otherwise whose marker names the repo
        inside_pipeline = (index.parent.parent / "model_index.json").is_file()
        if not inside_pipeline and named_in(index, repo):  # not a pipeline's text encoder
            return index.parent
    return None


def named_in(marker: Path, repo: str) -> bool:
    """Whether a config file (``config.json``, ``model_index.json``) says it is ``repo``:
    its ``_name_or_path`` names the repo, compared as slugs: ``openai/clip-vit-large-patch14``
    and ``clip-vit-large-patch14/`` (how that repo's own config.json on the Hub names itself)
    both do. Configs saved by transformers 4 carry the field; transformers 5 no longer
    writes it, so a folder saved by it is found by its path only."""
    try:
        named = json.loads(marker.read_text()).get("_name_or_path") or ""
    except (OSError, ValueError, AttributeError):
        return False
    named = str(named).rstrip("/").split("/")[-1]
    return bool(named) and slug(named) == slug(repo.split("/")[-1])
