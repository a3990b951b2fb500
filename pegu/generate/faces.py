"""The face detail stage: detect faces, img2img each crop at the model's native size, paste
it back feathered and colour-matched (ADetailer's / FaceDetailer's way).

Detector: facenet-pytorch's MTCNN (Zhang et al. 2016), whose three small networks ship inside
its wheel, so it works offline (install it with ``pip install --no-deps facenet-pytorch``:
its pins are for old torch; it runs on current torch).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core import compat
from ..core.errors import BadInput, MissingPackage, WeightsError, WeightsUnavailable
from ..core.registry import FACE_RESTORERS
from ..sources import at_hand, cached_file, fetch_file, is_offline, load_state_dict

MIN_SCORE = 0.9  # MTCNN's face probability below which a detection is dropped


@dataclass(frozen=True)
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in pixels of the image it was found in,
    MTCNN's probability ``score``, and ``crop``, the padded square that was refined."""

    box: tuple[int, int, int, int]
    score: float
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    landmarks: tuple = ()  # eyes, nose, mouth corners: five (x, y), left to right


_DETECTORS: dict = {}


def _mtcnn(min_size: int):
    try:
        from facenet_pytorch import MTCNN
    except ImportError as e:
        raise MissingPackage(f"the face stage needs facenet-pytorch's MTCNN ({e}): pip install "
                             "--no-deps facenet-pytorch") from None
    if min_size not in _DETECTORS:
        _DETECTORS[min_size] = MTCNN(keep_all=True, min_face_size=min_size, device="cpu")
    return _DETECTORS[min_size]


def detect(image, min_size: int = 24, max_faces: int = 4) -> list[Face]:
    """The faces MTCNN finds in ``image`` (PIL or array) with probability ≥ MIN_SCORE and
    sides ≥ ``min_size`` px, largest first, at most ``max_faces``."""
    import torch
    from PIL import Image

    img = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image
    if min(img.size) < max(min_size, 12):  # no face of min_size fits (MTCNN's smallest: 12)
        return []
    with torch.no_grad():
        boxes, probs, points = _mtcnn(min_size).detect(img.convert("RGB"), landmarks=True)
    if boxes is None:
        return []
    faces = []
    for b, p, pts in zip(boxes, probs, points):
        x0, y0, x1, y1 = (int(round(v)) for v in b)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(img.width, x1), min(img.height, y1)
        if p >= MIN_SCORE and min(x1 - x0, y1 - y0) >= min_size:
            faces.append(Face((x0, y0, x1, y1), float(p),
                              landmarks=tuple((float(x), float(y)) for x, y in pts)))
    faces.sort(key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    return faces[:max_faces]


def crop_box(box, padding: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A square around ``box`` grown by ``padding`` × its side on every side, moved (not
    cut) to lie inside an image of ``size`` where it fits."""
    x0, y0, x1, y1 = box
    side = int(round(max(x1 - x0, y1 - y0) * (1 + 2 * padding)))
    side = max(8, min(side, size[0], size[1]))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(round(min(max(cx - side / 2, 0), size[0] - side)))
    top = int(round(min(max(cy - side / 2, 0), size[1] - side)))
    return left, top, left + side, top + side


def feather_mask(side: int, band: int):
    """(side, side) float weights: 1 inside, a cosine ramp to 0 over ``band`` px at the
    edges, so a pasted crop blends into its surroundings."""
    band = max(1, min(band, side // 2))
    ramp = np.ones(side)
    t = (np.arange(band) + 0.5) / band
    ramp[:band] = 0.5 - 0.5 * np.cos(np.pi * t)
    ramp[side - band:] = ramp[:band][::-1]
    return np.outer(ramp, ramp)


def match_colour(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``new`` (H, W, 3 float) with each channel's mean and spread moved to ``old``'s
    (Reinhard-style transfer): img2img's colour drift does not show at the paste."""
    out = new.astype(np.float64).copy()
    for c in range(3):
        a, b = out[..., c], old[..., c].astype(np.float64)
        sa = a.std()
        out[..., c] = (a - a.mean()) * (b.std() / sa if sa > 1e-6 else 1.0) + b.mean()
    return np.clip(out, 0, 255)


def paste(image, refined, crop, band: int | None = None):
    """``refined`` (a PIL image of any size) pasted into ``image`` (PIL) over ``crop``,
    resized to it, colour-matched to what it replaces and feathered over ``band`` px
    (default an eighth of the crop). Returns a new PIL image."""
    from PIL import Image

    x0, y0, x1, y1 = crop
    side = x1 - x0
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    old = base[y0:y1, x0:x1]
    new = np.asarray(refined.convert("RGB").resize((side, y1 - y0), Image.LANCZOS),
                     dtype=np.float64)
    new = match_colour(new, old)
    w = feather_mask(side, band or max(2, side // 8))[: y1 - y0, :, None]
    out = base.copy()
    out[y0:y1, x0:x1] = w * new + (1 - w) * old
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def refine_faces(image, generator, settings, faces_settings, progress: bool = False):
    """Detect and refine the faces of ``image`` (PIL) with ``generator`` (img2img at its
    native size, ``settings``: the image's GenerateSettings), then restore each with
    ``faces_settings.restore`` if set. Returns (new image, faces)."""
    from PIL import Image

    fs = faces_settings
    restorer = load_restorer(fs.restore, generator.offline) if fs.restore else None  # first
    found = detect(image, fs.min_size, fs.max_faces)
    g = generator.resolve(settings)
    if fs.prompt is not None:
        g = replace(g, prompt=fs.prompt)
    native = generator.native
    done = []
    for face in found:
        crop = crop_box(face.box, fs.padding, image.size)
        patch = image.crop(crop).convert("RGB").resize((native, native), Image.LANCZOS)
        g_crop = replace(g, width=native, height=native)
        refined = generator.refine(patch, g_crop, fs.strength, progress=progress).image
        image = paste(image, refined, crop)
        if restorer is not None:
            image = restore(image, face, restorer, fs.fidelity)
        done.append(replace(face, crop=crop))
    return image, done


# ---- restoration: GFPGAN, CodeFormer (through spandrel) ----

# FFHQ's five landmarks at 512², the alignment GFPGAN and CodeFormer were trained on
# (facexlib's FaceRestoreHelper.face_template)
FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], np.float32)


def load_restorer(name_or_path: str, offline: bool | None = None):
    """spandrel's descriptor of a face restorer: a registry name (``FACE_RESTORERS``:
    GFPGANv1.4, CodeFormer; fetched by pegu.sources, each checked by sha256) or a weights
    file."""
    spec = _restorer_spec(name_or_path)
    if spec is not None:
        return fetch_file(spec.file, offline=is_offline(offline), build=restorer_from)[0]
    path = _unknown_unless_file(name_or_path)
    return restorer_from(load_state_dict(path), str(path))


def _restorer_spec(name: str):
    """The FACE_RESTORERS entry named (or aliased) ``name``, or None."""
    return next((s for s in FACE_RESTORERS.values() if name in (s.name, *s.aliases)), None)


def check_restorer(name_or_path: str, offline: bool | None = None) -> None:
    """Refuse, before any work, a restorer that is unknown, a missing file, or (offline)
    a registry restorer whose weights are not on this machine."""
    spec = _restorer_spec(name_or_path)
    if spec is None:
        _unknown_unless_file(name_or_path)
    elif not at_hand(spec, is_offline(offline)):
        raise WeightsUnavailable(f"no weights for {spec.name}: offline mode is on. Download "
                                 f"{spec.url} to {cached_file(spec.file)}")


def _unknown_unless_file(name_or_path: str) -> Path:
    """The path ``name_or_path`` names, or BadInput for an unknown restorer."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise BadInput(f"unknown face restorer {name_or_path!r}: use "
                       f"{', '.join(FACE_RESTORERS)} or the path of a weights file")
    return path


def restorer_from(state: dict, where: str):
    """A FaceSR descriptor (GFPGAN, RestoreFormer, CodeFormer, ...) built by spandrel."""
    with compat.quiet():  # GFPGAN's and CodeFormer's modules warn when first imported
        import spandrel

        try:
            import spandrel_extra_arches  # CodeFormer lives there (non-commercial licence)

            spandrel_extra_arches.install(ignore_duplicates=True)
        except ImportError:
            pass
    try:
        with compat.quiet():
            desc = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except spandrel.UnsupportedModelError:
        hint = ("; CodeFormer needs pip install spandrel-extra-arches"
                if "position_emb" in state else "")
        raise WeightsError(f"{where}: not a face restorer spandrel knows{hint}") from None
    if getattr(desc, "purpose", None) != "FaceSR":
        raise WeightsError(f"{where} is a {desc.architecture.name} {desc.purpose} model, "
                           "not a face restorer (GFPGAN, CodeFormer, RestoreFormer, ...)")
    return desc.eval()


def restore(image, face: Face, restorer, fidelity: float = 0.5):
    """``face`` of ``image`` (PIL) aligned to FFHQ's 512² template by its landmarks,
    restored (inputs and outputs in [-1, 1], as the restorers were trained; CodeFormer
    takes ``fidelity`` as its weight w), warped back and blended with a feathered mask."""
    import cv2
    import torch
    from PIL import Image

    if len(face.landmarks) != 5:
        raise BadInput("restoring a face needs its five landmarks (pegu.faces.detect)")
    arr = np.asarray(image.convert("RGB"))
    h, w = arr.shape[:2]
    m = cv2.estimateAffinePartial2D(np.array(face.landmarks, np.float32), FFHQ_512,
                                    method=cv2.LMEDS)[0]
    aligned = cv2.warpAffine(arr, m, (512, 512), borderMode=cv2.BORDER_REFLECT101)
    x = torch.from_numpy(aligned).permute(2, 0, 1)[None].float() / 127.5 - 1
    model = restorer.model
    with torch.no_grad():
        kw = {"weight": fidelity} if restorer.architecture.id == "CodeFormer" else {}
        y = model(x.to(next(model.parameters()).device), **kw)[0].float().cpu()
    out = ((y[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    inverse = cv2.invertAffineTransform(m)
    back = cv2.warpAffine(out, inverse, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(feather_mask(512, 32).astype(np.float32), inverse, (w, h))[..., None]
    blended = mask * back + (1 - mask) * arr
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))
