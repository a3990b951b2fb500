"""Weight files: checksums, atomic downloads, loading without running pickled code."""
from __future__ import annotations

import hashlib
import os
import pickle
import urllib.request
import zipfile
from pathlib import Path

from ..core.errors import BadInput, MissingFile, WeightsError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; verify its length and ``sha256``.

    The bytes go to a hidden ``.part`` file beside ``dest`` that is renamed into place
    only once complete and verified, and removed on any failure.
    Raises WeightsError (checksum, short read) or OSError/URLError (network).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "pegu"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm.auto import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            size = f.tell()
        if total is not None and size != total:
            raise WeightsError(f"download of {url} stopped at {size} of {total} bytes; try again")
        if sha256 and h.hexdigest() != sha256:
            raise WeightsError(
                f"{url} has sha256 {h.hexdigest()}, expected {sha256}: the file is not the "
                "published one. Nothing was saved; try again or check the URL.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_state_dict(path: Path) -> dict:
    """Tensors from a ``.safetensors`` or ``.pth``/``.pt``/``.ckpt`` file, never running
    pickled code (``torch.load(weights_only=True)``). basicsr's ``params_ema`` (preferred)
    or ``params`` wrapper, a ``state_dict`` wrapper (HPSv2, Lightning) and a DataParallel
    ``module.`` prefix are removed."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                data = load_file(str(path))
            except SafetensorError as e:
                raise BadInput(str(e)) from e
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} holds pickled objects other than tensors; pegu does not run code from "
            f"weight files. Re-save it as a plain state dict or .safetensors. ({e})") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            IndexError, KeyError, TypeError, AttributeError) as e:  # torch's unpickler on junk
        raise WeightsError(
            f"{path} is not a readable weights file (truncated, corrupted, or not weights): "
            f"{type(e).__name__}: {e}. Delete it and download it again.") from e
    if isinstance(data, dict):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}
