"""Reading images (16-bit colour included), writing PNGs atomically, and images as the
float planes networks take (any PIL mode or numpy layout in, the same kind out)."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BadInput, MissingFile, WriteFailed


def read_image(path):
    """A PIL image, or an H×W×3/4 uint16 RGB(A) array for 16-bit colour files (which
    PIL would cut to 8 bits). Raises FileNotFoundError / ValueError with the path."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if not (im.mode in ("RGB", "RGBA") and _sixteen_bit(path, im)):
                return im.copy()
    except Image.DecompressionBombError as e:  # a header claiming a gigantic image
        raise BadInput(f"{path} is too large to read safely ({e}); upscale a smaller "
                         "image, or crop it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInput(f"{path} is not a readable image ({e})") from e
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 3:
        raise BadInput(f"{path} is not a readable 16-bit colour image")
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
    if path.is_dir():
        raise WriteFailed(f"cannot write {path}: it is a folder; give a file name (or remove "
                          "the folder)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except WriteFailed:
        raise
    except OSError as e:
        raise write_failed(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


# what each refusal of the system means for the user (errno names: Linux's, POSIX's)
_WRITE_CAUSES = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file-size limit "
                 "(ulimit -f, or the file system's largest file) was reached",
                 errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the file system "
                 "is read-only", errno.EACCES: "permission denied (a read-only folder?)",
                 errno.EPERM: "permission denied", errno.EISDIR: "a folder is in the way",
                 errno.ENOTDIR: "a file is in the way of a folder on the path",
                 errno.ENOENT: "its folder does not exist"}


def _cause(e: OSError) -> str:
    return _WRITE_CAUSES.get(e.errno, e.strerror or str(e))


def write_failed(path, e: OSError) -> WriteFailed:
    """pegu's one-line error for a write the system refused: the path, the cause, what to
    do, and that nothing was written."""
    return WriteFailed(f"cannot write {path}: {_cause(e)}. Nothing was written and earlier "
                       "files are unchanged; free space or choose another place (--out)")


def remove_stale_temp(folder) -> list[Path]:
    """Delete the temporary files of :func:`atomic_write` in ``folder`` whose writer process
    no longer runs (killed mid-write); returns them."""
    import re

    gone = []
    for p in Path(folder).glob(".*.tmp*"):
        m = re.search(r"\.(\d+)\.tmp(\.\w+)?$", p.name)
        if m is None or process_alive(m.group(1)):
            continue
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def process_alive(pid) -> bool:
    """Whether process ``pid`` (a number, or its text) runs on this machine."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
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
    if folder.exists() and not folder.is_dir():
        raise WriteFailed(f"cannot write to the output folder {folder}: it is a file; choose "
                          "another with --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pegu-check-"):
            pass
    except OSError as e:
        raise WriteFailed(f"cannot write to the output folder {folder}: {_cause(e)}; choose "
                          "another with --out") from None
    return folder


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601


@dataclass(frozen=True)
class PlanesMeta:
    kind: str          # "pil" or "numpy"
    mode: str          # PIL mode to return, or numpy layout "HW", "HW1", "HW3", "HW4"
    max_value: int     # 255, 65535, or 1 for float arrays
    gray: bool
    note: str = ""     # what was converted on the way in, for the user


def to_planes(image):
    """Image -> ((3 or 4, H, W) float32 tensor in [0, 1], how to encode the result)."""
    import torch
    from PIL import Image

    note = ""
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            note = f"palette (P) image converted to {image.mode}; the result is {image.mode}"
            mode = image.mode
        elif mode == "1":
            image = image.convert("L")
            note, mode = "1-bit image converted to 8-bit gray (L)", "L"
        elif mode in ("PA", "RGBa", "La"):  # palette with alpha, premultiplied alpha
            image = image.convert("LA" if mode == "La" else "RGBA")
            note = f"{mode} image converted to {image.mode}; the result is {image.mode}"
            mode = image.mode
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):  # e.g. a print-shop CMYK JPEG
            image = image.convert("RGB")  # PIL's conversion; the result is RGB
            note, mode = f"{mode} image converted to RGB; the result is RGB", "RGB"
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(image).astype(np.int64)
            if arr.min() < 0 or arr.max() > 65535:
                raise BadInput(f"mode {mode} image has values outside 0..65535; "
                                 "pegu takes 8- or 16-bit images")
            arr = arr.astype(np.uint16)
            meta = PlanesMeta("pil", "I;16", 65535, True,
                         "" if mode == "I;16" else f"{mode} image read as 16-bit gray (I;16)")
        elif mode in ("RGB", "RGBA", "L", "LA"):
            arr = np.asarray(image)
            meta = PlanesMeta("pil", mode, 255, mode in ("L", "LA"), note)
        else:
            raise BadInput(f"PIL mode {mode} is not supported (a 32-bit float image has no "
                             "agreed range); convert first, e.g. image.convert('RGB'), or pass "
                             "a numpy float array in [0, 1]")
    elif isinstance(image, np.ndarray):
        arr = image
        floats = arr.dtype in (np.float16, np.float32, np.float64)
        if floats and arr.size and not (np.isfinite(arr).all() and arr.min() >= 0
                                        and arr.max() <= 1):
            raise BadInput("float images must hold finite values in [0, 1] (got "
                             f"{np.nanmin(arr):g}..{np.nanmax(arr):g}); scale them first")
        if not floats and arr.dtype not in (np.uint8, np.uint16):
            raise BadInput(f"numpy images must be uint8, uint16 or floats in [0, 1], got "
                             f"{arr.dtype}")
        if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)):
            layout = "HW" if arr.ndim == 2 else f"HW{arr.shape[2]}"
        else:
            raise BadInput(f"numpy images must be HxW, HxWx1, HxWx3 or HxWx4, got shape "
                             f"{arr.shape}")
        meta = PlanesMeta("numpy", layout, 1 if floats else 65535 if arr.dtype == np.uint16
                     else 255, layout in ("HW", "HW1"))
    else:
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadInput(f"the image is empty ({arr.shape[1]}x{arr.shape[0]})")
    x = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32) / meta.max_value)
    x = x[..., None] if x.ndim == 2 else x
    x = x.permute(2, 0, 1)
    if meta.gray:  # L / LA / I;16: gray to RGB, alpha kept
        x = torch.cat([x[:1].expand(3, -1, -1), x[1:]])
    return x.contiguous(), meta


def luma(rgb):
    """(3, H, W) -> (1, H, W) with ITU-R 601 weights, as cv2's RGB2GRAY (and RealESRGANer)."""
    return sum(c * rgb[i] for i, c in enumerate(LUMA))[None]


def from_planes(x, meta: PlanesMeta):
    """(3 or 4, H, W) float tensor in [0, 1] -> image of the kind described by ``meta``."""
    import torch
    from PIL import Image

    x = torch.cat([luma(x[:3]), x[3:]]) if meta.gray else x
    if meta.max_value == 1:  # floats in, float32 in [0, 1] out
        arr = x.clamp_(0, 1).numpy().astype(np.float32, copy=False).transpose(1, 2, 0)
    elif meta.max_value == 255:  # in place, then one byte per value: no float temporaries
        arr = x.mul_(255).round_().to(torch.uint8).numpy().transpose(1, 2, 0)
    else:
        arr = x.mul_(65535).round_().to(torch.int32).numpy().astype(np.uint16).transpose(1, 2, 0)
    if meta.kind == "numpy":
        return arr[..., 0] if meta.mode == "HW" else arr
    if meta.mode in ("L", "I;16"):
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr))  # mode follows shape and dtype
