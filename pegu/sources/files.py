"""Weight files: checksums, atomic downloads, loading without running pickled code."""
from __future__ import annotations

import hashlib
import os
import pickle
import urllib.request
import warnings
from pathlib import Path

from ..core.errors import MissingFile, WeightsError


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


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else "")[:limit]


def read_weights(path, what: str = "weights file"):
    """What a ``.safetensors`` or pickled torch file (``.pt``/``.pth``/``.bin``/``.ckpt``)
    holds, read without running pickled code (``torch.load(weights_only=True)``): a dict of
    tensors, or for torch files whatever plain data they hold (A1111's embeddings keep
    names and step counts beside the tensors).

    The one checked reader of weight files: a missing, empty, truncated, corrupted or
    code-carrying file raises pegu's error naming the file (``what``: e.g. "embedding",
    "LoRA") and what to do, never a library's exception."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"the {what} {path} is empty (0 bytes): an interrupted copy or "
                           "download; delete it and copy or download it again")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():  # torch's note on the pickle protocol of old files
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"the {what} {path} holds pickled objects other than tensors; pegu does not run "
            "code from weight files. Use a .safetensors copy of it (or re-save it as a plain "
            f"state dict) ({first_line(e, 120)})") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001  safetensors' and torch's unpickler's errors on junk
        raise WeightsError(
            f"the {what} {path} is not a readable weights file (truncated, corrupted, or not "
            f"weights: {type(e).__name__}: {first_line(e, 120)}); delete it and download it "
            "again") from None


def _is_safetensors(path: Path) -> bool:
    """By name, or by content for a file named otherwise: a safetensors file starts with the
    8-byte length of its JSON header, which starts with ``{``; a torch file is a zip
    (``PK``) or a pickle (``0x80``)."""
    if path.suffix.lower() == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def tensor_names(path, what: str = "checkpoint") -> list[str]:
    """The tensor names of a weights file; for safetensors from its header alone (no
    tensor is read), with :func:`read_weights`'s checks and errors."""
    path = Path(path)
    if path.is_file() and path.stat().st_size and _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        except Exception as e:  # noqa: BLE001  SafetensorError and the like
            raise WeightsError(
                f"the {what} {path} is not a readable .safetensors file (truncated or "
                f"corrupted: {first_line(e, 120)}); delete it and download it again") \
                from None
    data = read_weights(path, what)
    if not isinstance(data, dict):
        raise WeightsError(f"the {what} {path} does not hold named tensors")
    if isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return [str(k) for k in data]


def load_state_dict(path: Path, what: str = "weights file") -> dict:
    """Tensors from a weights file (:func:`read_weights`). basicsr's ``params_ema``
    (preferred) or ``params`` wrapper, a ``state_dict`` wrapper (HPSv2, Lightning) and a
    DataParallel ``module.`` prefix are removed."""
    import torch

    path = Path(path)
    data = read_weights(path, what)
    if isinstance(data, dict):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"the {what} {path} does not hold a state dict of tensors; it is "
                           "another kind of file")
    return {str(k).removeprefix("module."): v for k, v in data.items()}
