"""Reading images (16-bit colour included) and writing PNGs atomically."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def read_image(path):
    """A PIL image, or an H×W×3/4 uint16 RGB(A) array for 16-bit colour files (which
    PIL would cut to 8 bits). Raises FileNotFoundError / ValueError with the path."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if not (im.mode in ("RGB", "RGBA") and _sixteen_bit(path, im)):
                return im.copy()
    except Image.DecompressionBombError as e:  # a header claiming a gigantic image
        raise ValueError(f"{path} is too large to read safely ({e}); upscale a smaller "
                         "image, or crop it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from e
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise ValueError(f"{path} is not a readable 16-bit colour image")
    return np.ascontiguousarray(arr[..., [2, 1, 0, 3][: arr.shape[2]]])


def _sixteen_bit(path: Path, im) -> bool:
    """Whether a colour PNG/TIFF stores 16 bits per channel."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            return f.read(25)[24] == 16  # IHDR bit depth
    if im.format == "TIFF":
        return 16 in tuple(im.tag_v2.get(258, ()))
    return False


def atomic_write(path, write, suffix: str = "") -> Path:
    """``write(tmp)`` to a hidden temporary file beside ``path`` (``.<name>.<pid>.tmp``
    + ``suffix``), flushed to disk, then renamed into place: ``path`` is never half-written,
    even after a kill or a power cut. :func:`remove_stale_temp` cleans a killed writer's."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temp(folder) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` in ``folder`` whose writer process
    no longer runs (killed mid-write); returns them."""
    import re

    gone = []
    for p in Path(folder).glob(".*.tmp*"):
        m = re.search(r"\.(\d+)\.tmp(\.\w+)?$", p.name)
        if m is None or _alive(int(m.group(1))):
            continue
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_png(image, path, pnginfo=None) -> Path:
    """Write ``image`` (PIL, or a uint8/uint16 numpy array) as PNG, atomically
    (:func:`atomic_write`)."""
    from PIL import Image

    def write(tmp):
        nonlocal image
        if isinstance(image, np.ndarray) and image.dtype == np.uint16 and image.ndim == 3:
            import cv2

            bgr = image[..., [2, 1, 0, 3][: image.shape[2]]]
            if not cv2.imwrite(str(tmp), bgr):
                raise OSError(f"could not write {tmp}")
        else:
            if isinstance(image, np.ndarray):
                image = Image.fromarray(image[..., 0] if image.ndim == 3
                                        and image.shape[2] == 1 else image)
            image.save(tmp, format="PNG", pnginfo=pnginfo)

    return atomic_write(path, write, suffix=".png")


def ensure_writable_dir(folder) -> Path:
    """Create ``folder`` and prove it writable before any work is done."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pegu-check-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write to the output folder {folder}: "
                              f"{e.strerror or e}; choose another with --out") from None
    return folder
