"""Kaggle kernels from this machine: stage the notebooks with their metadata (owner,
accelerator, internet, the models they attach), push them, follow them and fetch their
output; and build the ``pegu-wheels`` dataset their first cell installs from."""
from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..core.errors import BadInput, MissingPackage, PeguError
from ..core.registry import UPSCALERS, controlnet_spec, generator_spec
from .kaggle import BOOTSTRAP_CELL, DATASET, KAGGLE_EXTRAS, SETUP_SCRIPT, SETUP_SOURCE

PLACEHOLDER_USER = "USERNAME"


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


def _parameters(nb) -> tuple[int, dict]:
    """The notebook's parameters cell (its index) and the values it assigns, with those of
    an ``injected-parameters`` cell (papermill's, or :func:`stage`'s) over them."""
    import ast

    at, values = None, {}
    for i, cell in enumerate(nb.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            at = i if "parameters" in tags else at
            for node in ast.parse(cell.source).body:
                target = getattr(node, "target", None) or (getattr(node, "targets", None)
                                                           or [None])[0]
                if isinstance(target, ast.Name) and node.value is not None:
                    try:
                        values[target.id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    if at is None:
        raise BadInput("the notebook has no cell tagged 'parameters'")
    return at, values


def source_kind(source: str) -> tuple[str, str]:
    """(metadata key, id) of a Kaggle input: ``<owner>/<slug>`` a dataset,
    ``<owner>/<model>/<framework>/<variation>[/<version>]`` a model, and ``kernel:<owner>/
    <slug>`` a kernel's output (``dataset:`` and ``model:`` prefixes are accepted too)."""
    kind, _, rest = source.partition(":") if ":" in source else ("", "", source)
    parts = rest.strip("/").split("/")
    key = {"dataset": "dataset_sources", "model": "model_sources",
           "kernel": "kernel_sources"}.get(kind) if kind else \
        {2: "dataset_sources", 4: "model_sources", 5: "model_sources"}.get(len(parts))
    if key is None or not all(re.fullmatch(r"[\w.-]+", p) for p in parts) or \
            (key == "model_sources") != (len(parts) in (4, 5)) or \
            (key != "model_sources" and len(parts) != 2):
        raise BadInput(f"{source!r} is not a Kaggle input: <owner>/<dataset>, <owner>/<model>/"
                       "<framework>/<variation>[/<version>] (as in the model's URL), or "
                       "kernel:<owner>/<notebook>")
    return key, "/".join(parts)


def model_args(values) -> tuple[list[str], dict[str, str]]:
    """``--models`` values ``NAME`` or ``NAME=SOURCE`` as (names, {name: Kaggle source}); each
    name is checked against the registry."""
    names, sources = [], {}
    for value in values or ():
        name, _, source = str(value).partition("=")
        generator_spec(name)  # an unknown name is refused with the known ones
        names.append(name)
        if source:
            source_kind(source)
            sources[name] = source
    return names, sources


def offline_needs(params: dict) -> list[str]:
    """What a notebook with ``params`` loads from the Hub, each with the parameter it comes
    from: with the internet off each must be attached (or its parameter changed)."""
    models = params.get("models") or [params.get("model")]
    needs = []
    for name in filter(None, models):
        spec = generator_spec(name)
        if not spec.tiny:
            needs.append(f"{spec.repo} (the model {name})")
            if spec.vae:
                needs.append(f"{spec.vae} (the VAE of {name})")
        if params.get("control") and not spec.tiny:
            net = controlnet_spec(None, spec.family)
            needs.append(f"{net.repo} (the tile ControlNet: control > 0)")
    clip = params.get("clip_model")
    if clip and not str(clip).startswith("tiny-"):
        needs.append(f"{clip} (clip_model; '' measures without CLIP)")
    upscaler = UPSCALERS.get(str(params.get("upscaler")))
    if upscaler is not None and upscaler.file.url and not upscaler.file.ncnn:
        needs.append(f"{upscaler.file.filename} (upscaler {upscaler.name})")
    return needs


def stage(name: str, dest: Path, username: str, accelerator: str = DEFAULT_ACCELERATOR,
          internet: bool = True, root: Path | None = None, models=(), attach=(),
          shard: tuple[int, int] | None = None, resume: bool = False) -> Path:
    """Stage notebook ``name`` (e.g. "02_upscaling_walkthrough") for ``kaggle kernels push``:
    dest/name/ with kernel-metadata.json (username, accelerator, internet and the inputs to
    attach filled in) and the notebook with the Kaggle setup cell first. ``models``:
    ``--models`` values (``NAME[=SOURCE]``), set as the notebook's ``models`` (or ``model``)
    parameter in an ``injected-parameters`` cell as papermill does, each SOURCE attached;
    ``attach``: more Kaggle inputs (see :func:`source_kind`). Raises BadInput listing
    problems, and with the internet off, when a model would have no weights (else it prints
    what the attached inputs must hold: :func:`offline_needs`). ``shard`` (i, n): the
    kernel runs share i of n of its sweeps (its ``shard`` parameter; title and id get
    "shard i+1 of n", as the folder ``<name>-shard-<i+1>-of-<n>``). ``resume``: the kernel
    attaches its own earlier version's output and continues its sweeps from it
    (``resume_from = "attached"``: runs already done are kept, not run again)."""
    import nbformat

    root = Path(root or repo_root())
    if accelerator in INTERNAL:
        raise BadInput(f"{accelerator} is {INTERNAL[accelerator]}")
    if accelerator not in ACCELERATORS:
        raise BadInput(f"accelerator must be one of {', '.join(ACCELERATORS)}")
    meta_path = _metadata_path(name, root)
    notebook = root / "notebooks" / f"{name}.ipynb"
    check_username(username)
    meta = {k: _with_owner(v, username) for k, v in json.loads(meta_path.read_text()).items()}
    meta.update(machine_shape=accelerator, enable_internet=internet, enable_gpu=True)
    nb = nbformat.read(str(notebook), as_version=4)
    at, params = _parameters(nb)
    names, sources = model_args(models)
    injected = {}
    if names:
        key = "models" if "models" in params else "model"
        if key == "model" and len(names) != 1:
            raise BadInput(f"{name} runs one model; --models gave {len(names)}")
        params[key] = injected[key] = names if key == "models" else names[0]
    for key, value, flag in (("shard", shard and f"{shard[0]}/{shard[1]}", "--shards"),
                             ("resume_from", resume and "attached", "--resume")):
        if value:
            if key not in params:
                raise BadInput(f"{name} has no {key} parameter: {flag} is for the sweep "
                               "notebook (01_model_comparison)")
            params[key] = injected[key] = value
    if shard:
        meta["title"] = f"{meta['title']} shard {shard[0] + 1} of {shard[1]}"
        meta["id"] = f"{username}/{slugify(meta['title'])}"
    if resume and meta["id"] not in meta["kernel_sources"]:
        meta["kernel_sources"].append(meta["id"])  # its own earlier version's output
    if injected:
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
            "# Parameters (set by `pegu kaggle push`)\n"
            + "".join(f"{k} = {v!r}\n" for k, v in injected.items()),
            metadata={"tags": ["injected-parameters"]}))
    for src in [*sources.values(), *attach]:
        key, ident = source_kind(src)
        if ident not in meta[key]:
            meta[key].append(ident)
    if not internet:
        bare = [m for m in (params.get("models") or [params.get("model")])
                if m and not generator_spec(m).tiny and m not in sources]
        if bare and not attach:
            raise BadInput(
                f"{name} with the internet off: nothing attached holds {', '.join(bare)}. "
                f"Name where each is: --models {bare[0]}=<owner>/<dataset> (or <owner>/<model>"
                "/<framework>/<variation>), or --attach the inputs that hold them.")
        needs = offline_needs(params)
        if needs:
            print(f"{name}, internet off: the attached inputs must hold " + "; ".join(needs))
    nb.cells.insert(0, nbformat.v4.new_code_cell(BOOTSTRAP_CELL))
    folder = Path(dest) / (f"{name}-shard-{shard[0] + 1}-of-{shard[1]}" if shard else name)
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / meta["code_file"]))
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2))
    problems = validate_metadata(meta, folder)
    if problems:
        raise BadInput(f"{name}: " + "; ".join(problems))
    return folder


def _metadata_path(name: str, root: Path) -> Path:
    """``kaggle/<name>/kernel-metadata.json`` of a notebook pegu ships (one with its
    ``notebooks/<name>.ipynb``); an unknown name is refused with the known ones."""
    meta_path = root / "kaggle" / name / "kernel-metadata.json"
    if not meta_path.is_file() or not (root / "notebooks" / f"{name}.ipynb").is_file():
        known = sorted(p.name for p in (root / "kaggle").iterdir() if p.is_dir())
        raise BadInput(f"unknown notebook {name!r}; known: {', '.join(known)}")
    return meta_path


def kernel_id(name: str, username: str | None = None, root: Path | None = None) -> str:
    """``<owner>/<slug>`` of notebook ``name``'s kernel (the owner: ``username``, else the
    credentials')."""
    meta_path = _metadata_path(Path(name).stem, Path(root or repo_root()))
    user = check_username(username or kaggle_username())
    return _with_owner(json.loads(meta_path.read_text())["id"], user)


def _kaggle(cmd: list[str]) -> None:
    if shutil.which("kaggle") is None:
        raise MissingPackage("the kaggle CLI is not installed: pip install kaggle (and put your "
                             "API token in ~/.kaggle/kaggle.json)")
    subprocess.run(cmd, check=True)


def push(names, *, accelerator: str = DEFAULT_ACCELERATOR, internet: bool = True,
         dry_run: bool = False, username: str | None = None, staging: Path | None = None,
         models=(), attach=(), shards: int | None = None, resume: bool = False):
    """Stage each notebook (:func:`stage`) and run ``kaggle kernels push`` (or, dry run,
    print the staged folder and the command), then say where the kernel is and how to
    follow it. A dry run without a username stages with the placeholder USERNAME and says
    so. With the internet off, staging lists what the kernel loads that must be attached.
    ``shards`` N: N kernels per notebook, kernel i running share i of its sweeps (merge
    their outputs with ``pegu sweep merge``); ``resume``: each continues from its own
    earlier version's output (see :func:`stage`). Returns [(folder, command)]."""
    if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int)
                               or not 1 <= shards <= 100):
        raise BadInput(f"--shards is a number of kernels from 1 to 100, got {shards!r}")
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
    for name, shard in [(Path(n).stem, sh) for n in names
                        for sh in ([(i, shards) for i in range(shards)] if shards else [None])]:
        folder = stage(name, staging, user, accelerator, internet, root, models, attach,
                       shard=shard, resume=resume)
        cmd = ["kaggle", "kernels", "push", "-p", str(folder), "--accelerator", accelerator]
        done.append((folder, cmd))
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        if dry_run:
            print(f"staged {folder}:")
            for f in sorted(folder.iterdir()):
                print(f"  {f.name}")
            print("  " + (folder / "kernel-metadata.json").read_text().replace("\n", "\n  "))
            print("would run: " + " ".join(cmd))
        else:
            _kaggle(cmd)
        print(f"{folder.name}: https://www.kaggle.com/code/{meta['id']} — follow it with "
              f"`kaggle kernels status {meta['id']}`; when it is complete, `kaggle kernels "
              f"output {meta['id']} -p out/{folder.name}` fetches what it wrote")
    if shards and len(done) > 1:
        print(f"when all {len(done)} are complete and fetched: `pegu sweep merge "
              + " ".join(f"out/{f.name}/results/{f.name.split('-shard-')[0]}/prompts"
                         for f, _ in done[:2])
              + " ... --out merged/prompts` joins their tables (and lists runs still missing)")
    return done


def follow(name: str, action: str, *, username: str | None = None,
           out: Path | None = None) -> list[str]:
    """``kaggle kernels status`` (action "status") or ``kaggle kernels output`` into ``out``
    (action "output") for notebook ``name``'s kernel; returns the command it ran."""
    kid = kernel_id(name, username)
    cmd = ["kaggle", "kernels", action, kid]
    if action == "output":
        out = Path(out or Path("results") / "kaggle" / Path(name).stem)
        out.mkdir(parents=True, exist_ok=True)
        cmd += ["-p", str(out)]
    _kaggle(cmd)
    return cmd


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
        (build / SETUP_SCRIPT).write_text(SETUP_SOURCE)
        (build / "dataset-metadata.json").write_text(json.dumps(
            dataset_metadata(user, sorted(build.glob("*.whl"))), indent=2))
        if out.exists():
            shutil.rmtree(out)
        build.rename(out)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return out
