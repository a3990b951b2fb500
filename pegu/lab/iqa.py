"""The field's image-quality metrics, an optional extra (``pip install 'pegu[iqa]'``).

* **No-reference panel** through pyiqa (Chaofeng Chen's IQA-PyTorch, the library the
  super-resolution literature reports with): MUSIQ, CLIP-IQA, MANIQA, NIQE, TOPIQ-NR and
  TOPIQ-NR-face. Their weights download on first use into pyiqa's cache,
  ``$TORCH_HOME/hub/pyiqa`` (``~/.cache/torch/hub/pyiqa``; MANIQA's ViT backbone goes to
  the Hugging Face cache); :func:`seed_cache` copies a folder of them there (on Kaggle, a
  dataset holding a ``pyiqa`` folder is used by itself).
* **FID and KID** through torchmetrics over torch-fidelity's Inception-v3 (the
  ``inception-v3-compat`` network of the original TensorFlow FID), on whole images
  (resized to 299²) and, with ``crop``, on crops at native resolution (as DemoFusion,
  FouriScale and AccDiffusion report FID_c / KID_c for high-resolution generation).

Directions differ: NIQE and PIQE are lower-better, the others higher-better
(:func:`lower_better`).
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from urllib.error import URLError

import numpy as np

from ..core import compat
from ..core.device import resolve_device
from ..core.errors import BadInput, MissingFile, MissingPackage, WeightsUnavailable
from ..core.images import atomic_write, read_image
from ..core.registry import INCEPTION
from ..sources import fetch_file, find_attached, is_offline, load_state_dict
from . import judges

PANEL = ("musiq", "clipiqa", "maniqa", "niqe", "topiq_nr", "topiq_nr-face")
WEIGHT_FREE = ("piqe", "entropy")  # pyiqa metrics with no weights to download
JUDGES = judges.PER_IMAGE  # text-aware: HPSv2.1, ImageReward, PickScore, VQA P(yes)
INSTALL = "pip install 'pegu[iqa]' (or: pip install -r requirements-iqa.txt)"


def _pyiqa():
    try:
        return compat.pyiqa_module()
    except ImportError as e:
        raise MissingPackage(f"the IQA panel needs pyiqa ({e}): {INSTALL}") from None


def pyiqa_cache() -> Path:
    """Where pyiqa keeps the weights it downloads (pyiqa's own cache, fixed when pyiqa is
    imported: ``$TORCH_HOME/hub/pyiqa``)."""
    try:
        from pyiqa.utils.download_util import DEFAULT_CACHE_DIR
    except ImportError:
        from torch.hub import get_dir

        return Path(get_dir()) / "pyiqa"
    return Path(DEFAULT_CACHE_DIR)


def seed_cache(folder=None) -> list[Path]:
    """Copy weight files from ``folder`` into pyiqa's cache (existing files are kept), so
    the panel runs offline. ``folder`` None: every attached Kaggle input folder named
    ``pyiqa``. Returns the files copied."""
    folders = [Path(folder)] if folder is not None else [
        p for p in find_attached("pyiqa") if p.is_dir()]
    copied = []
    for src in folders:
        if not src.is_dir():
            raise MissingFile(f"no such folder: {src}")
        for f in sorted(src.iterdir()):
            dest = pyiqa_cache() / f.name
            if f.is_file() and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                copied.append(atomic_write(dest, lambda tmp, f=f: shutil.copyfile(f, tmp)))
    return copied


def lower_better(name: str) -> bool:
    """Whether a lower score of pyiqa metric ``name`` means a better image (from pyiqa's
    model table; without pyiqa, from the lower-better no-reference metrics it lists; pegu's
    judges are higher-better)."""
    if is_judge(name):
        return False
    try:
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
    except ImportError:
        return name.split("_")[0].split("-")[0] in ("niqe", "piqe", "brisque", "ilniqe", "pi")
    return bool(DEFAULT_CONFIGS.get(name, {}).get("lower_better", False))


def is_judge(name: str) -> bool:
    """Whether ``name`` is one of pegu.lab.judges' text-aware scores ("tiny-…": stand-ins)."""
    return name.removeprefix("tiny-") in JUDGES


def check_metrics(names) -> tuple[str, ...]:
    """The metric names, each a no-reference metric of pyiqa or a judge of
    pegu.lab.judges (hpsv2.1, imagereward, pickscore, vqa), or a BadInput listing the choices."""
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise BadInput(f"name at least one IQA metric, e.g. {', '.join(PANEL)}")
    rest = [n for n in names if not (isinstance(n, str) and is_judge(n))]
    known = set(_pyiqa().list_models(metric_mode="NR")) if rest else set()
    unknown = [n for n in rest if n not in known]
    if unknown:
        raise BadInput(f"unknown no-reference IQA metric {', '.join(map(repr, unknown))}; "
                         f"pegu's panel is {', '.join(PANEL)}, its judges "
                         f"{', '.join(JUDGES)} (all of pyiqa's: "
                         "python -c 'import pyiqa; print(pyiqa.list_models(\"NR\"))')")
    return names


def load_metric(name: str, device="auto", **kwargs):
    """pyiqa metric ``name`` on ``device``; missing weights offline raise WeightsUnavailable
    that says where to put them. ``kwargs`` go to pyiqa (e.g. ``pretrained=False``)."""
    pyiqa = _pyiqa()
    check_metrics([name])
    seed_cache()
    try:
        return pyiqa.create_metric(name, device=resolve_device(device), **kwargs)
    except (OSError, ValueError, RuntimeError) as e:  # URLError and the hub's errors are OSErrors
        if not _is_download_error(e):
            raise
        raise WeightsUnavailable(
            f"IQA metric {name!r} could not fetch its weights ({type(e).__name__}: "
            f"{str(e)[:160]}). Run it once online, or copy its files into {pyiqa_cache()} "
            "(pegu.iqa.seed_cache(folder); on Kaggle attach a dataset holding a 'pyiqa' "
            "folder)") from None


def _is_download_error(e: BaseException) -> bool:
    names = {type(x).__name__ for x in (e, e.__cause__, e.__context__) if x is not None}
    return isinstance(e, URLError) or bool(names & {
        "URLError", "LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError",
        "HTTPError", "gaierror"}) or "Name or service not known" in str(e)


def _tensor(image, dtype: str = "float"):
    """A PIL image, an array or a path -> (1, 3, H, W): float in [0, 1] or uint8."""
    import torch
    from PIL import Image

    if isinstance(image, (str, Path)):
        image = read_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)[None]
    if arr.dtype != np.uint8:
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return t.float() / 255 if dtype == "float" else t


def score(images, metrics=PANEL, device="auto", prompts=None,
          offline: bool | None = None, **kwargs) -> dict[str, list[float]]:
    """Each metric on each image: ``{metric: [score per image]}``.

    images: PIL images, numpy arrays or image paths (any size; RGB is scored). prompts: one
    per image (or one for all), for the judges (hpsv2.1, imagereward, pickscore, vqa), which read the
    prompt beside the image."""
    metrics = check_metrics(metrics)
    images = list(images)
    out = {}
    for name in metrics:
        if is_judge(name):
            if prompts is None:
                raise BadInput(f"{name} scores an image against its prompt: give the prompts")
            judge = judges.load_judge(name.removeprefix("tiny-"), device=device,
                                      offline=offline, tiny=name.startswith("tiny-"))
            out[name] = judge.score([read_image(i) if isinstance(i, (str, Path)) else i
                                     for i in images], prompts)
            del judge
            continue
        metric = load_metric(name, device=device, **kwargs)
        out[name] = metric_scores(metric, images)
        del metric
    return out


def metric_scores(metric, images) -> list[float]:
    """A loaded pyiqa metric's score of each image (PIL, array or path)."""
    import torch

    with torch.no_grad():
        return [float(metric(_tensor(im).to(metric.device))) for im in images]


# ---- FID / KID ----

def images_in(source) -> list:
    """A folder (its PNG/JPEG/WebP files, sorted), one path, or images as given."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            files = sorted(f for f in p.iterdir()
                           if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
            if not files:
                raise BadInput(f"{p} holds no PNG, JPEG or WebP images")
            return files
        if not p.exists():
            raise MissingFile(f"no such image or folder: {p}")
        return [p]
    return list(source)


def crops(image, size: int) -> list:
    """The non-overlapping ``size``² crops of a centred grid over ``image`` (a (1, 3, H, W)
    tensor), row by row."""
    _, _, h, w = image.shape
    return [image[:, :, y:y1, x:x1] for x, y, x1, y1 in crop_boxes(w, h, size)]


def crop_boxes(w: int, h: int, size: int) -> list[tuple[int, int, int, int]]:
    """The (x0, y0, x1, y1) of the non-overlapping ``size``² crops of a centred grid over a
    ``w``×``h`` image, row by row."""
    if h < size or w < size:
        raise BadInput(f"a {w}x{h} image is smaller than the {size}px crop; pick a "
                         "smaller crop or larger images")
    y0, x0 = (h % size) // 2, (w % size) // 2
    return [(x, y, x + size, y + size)
            for y in range(y0, h - size + 1, size) for x in range(x0, w - size + 1, size)]


def inception(weights=None, device="auto", offline: bool | None = None):
    """torch-fidelity's Inception-v3 (FID's network, 2048 features, uint8 input), from
    ``weights`` (a file), else wherever pegu.sources finds its published file (pegu's cache,
    an attached Kaggle input, the download)."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as e:
        raise MissingPackage(f"FID and KID need torchmetrics and torch-fidelity ({e}): "
                             f"{INSTALL}") from None
    import torch

    if weights is not None and not Path(weights).is_file():
        raise MissingFile(f"no such Inception weights file: {weights}")
    if weights is not None:
        state = load_state_dict(Path(weights))
    else:
        state, _ = fetch_file(INCEPTION, offline=is_offline(offline), build=lambda st, w: st)
    # torch-fidelity unpickles the file it is given: hand it a safely loaded copy
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / "inception.pth")
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=f"{tmp}/inception.pth")
    return net.to(resolve_device(device))


KID_SUBSETS = 100  # random subsets KID is averaged over


def fid_kid(generated, real, *, crop: int | None = None, feature=None, weights=None,
            device="auto", kid_subsets: int = KID_SUBSETS) -> dict:
    """FID and KID of ``generated`` against ``real`` photographs (folders, paths or images).

    Whole images (Inception resizes each to 299²), and with ``crop`` also the crops of a
    centred ``crop``² grid at native resolution (``fid_crop``, ``kid_crop``). KID is the
    mean over ``kid_subsets`` random subsets (seeded) of up to 1000 samples, with its
    standard deviation. Lower is better for both. ``feature``: another feature network
    (uint8 (N, 3, H, W) -> (N, D)); default :func:`inception` (``weights``: its file).
    """
    gen, ref = images_in(generated), images_in(real)
    check_crop(crop)
    net = feature if feature is not None else inception(weights, device)
    return compare(features(gen, net, crop), features(ref, net, crop), kid_subsets)


def check_crop(crop) -> None:
    if crop is not None and (not isinstance(crop, int) or crop < 16):
        raise BadInput(f"crop must be a size in pixels of at least 16, got {crop!r}")


def features(items, net, crop: int | None) -> dict:
    """{"": features of the whole images, "_crop": of their crops (with ``crop``)}."""
    import torch

    dev = next((q.device for q in net.parameters()), "cpu")
    whole, cropped = [], []
    with torch.no_grad():
        for im in items:
            t = _tensor(im, "uint8")
            whole.append(net(t.to(dev)).double().cpu())
            if crop:
                cropped += [net(c.to(dev)).double().cpu() for c in crops(t, crop)]
    out = {"": torch.cat(whole), "n": len(items)}
    if crop:
        out["_crop"] = torch.cat(cropped)
    return out


def compare(gen: dict, real: dict, kid_subsets: int) -> dict:
    """FID and KID of two :func:`features` results (see :func:`fid_kid`)."""
    def measure(g, r, suffix):
        kid, std = _kid(g, r, kid_subsets)
        return {f"fid{suffix}": _fid(g, r), f"kid{suffix}": kid, f"kid{suffix}_std": std}

    return _compare_sets(gen, real, "FID", measure)


def _compare_sets(gen: dict, real: dict, what: str, measure) -> dict:
    """The counts, and ``measure(generated, real, suffix)``'s values for the whole images
    and (where computed) the crops of two feature sets; fewer than 2 on a side is refused."""
    out = {"n_generated": gen["n"], "n_real": real["n"]}
    for suffix in [k for k in ("", "_crop") if k in gen]:
        g, r = gen[suffix], real[suffix]
        if len(g) < 2 or len(r) < 2:
            raise BadInput(f"{what} needs at least 2 samples on each side, got {len(g)} "
                           f"generated and {len(r)} real{' crops' if suffix else ''}")
        out.update(measure(g, r, suffix))
        if suffix:
            out["n_crops_generated"], out["n_crops_real"] = len(g), len(r)
    return out


def _fid(a, b) -> float:
    """torchmetrics' FID of two feature sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=_given(a.shape[1]))
    m.update(a, real=False)
    m.update(b, real=True)
    return float(m.compute())


def _kid(a, b, subsets: int) -> tuple[float, float]:
    """torchmetrics' KID (polynomial kernel, degree 3) of two feature sets: mean and std
    over ``subsets`` random subsets of min(1000, len(a), len(b)) samples, seeded. The std is
    NaN where every subset holds every sample of both sets (then all subsets are one and
    their spread says nothing)."""
    import torch
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(1000, len(a), len(b))
    with warnings.catch_warnings():  # "will save all extracted features": what KID is
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        m = KernelInceptionDistance(feature=_given(a.shape[1]), subsets=subsets,
                                    subset_size=size)
    m.update(a, real=False)
    m.update(b, real=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mean, std = m.compute()
    return float(mean), float("nan") if size == len(a) == len(b) else float(std)


def _given(d: int):
    """A feature 'network' for features already computed (torchmetrics takes a module)."""
    import torch

    class Given(torch.nn.Module):
        num_features = d

        def forward(self, x):
            return x

    return Given()


# ---- CMMD ----

def cmmd(generated, real, *, crop: int | None = None, embedder="default",
         device="auto", offline: bool | None = None) -> dict:
    """CMMD (Jayasumana et al. 2024) of ``generated`` against ``real`` photographs (folders,
    paths or images): ``cmmd`` as google-research/cmmd computes it and ``cmmd_unbiased``
    (each set's pairs with itself left out; see :func:`pegu.lab.judges.mmd`), whole images
    and with ``crop`` the crops of a centred ``crop``² grid (``cmmd_crop``…). Lower is
    better. embedder: a loaded pegu.lab.judges.ClipEmbedder, "default" (CLIP ViT-L/14-336)
    or "tiny" (a stand-in)."""
    gen, ref = images_in(generated), images_in(real)
    check_crop(crop)
    if not isinstance(embedder, judges.ClipEmbedder):
        embedder = judges.load_embedder("tiny" if embedder == "tiny" else judges.CMMD_CLIP,
                                        device=device, offline=offline)
    return compare_cmmd(embeddings(gen, embedder, crop), embeddings(ref, embedder, crop))


def embeddings(items, embedder, crop: int | None) -> dict:
    """{"": CMMD embeddings of the whole images, "_crop": of their crops, "n": count}."""
    from PIL import Image

    whole, cropped = [], []
    for im in items:
        t = _tensor(im, "uint8")
        whole.append(embedder.embed([Image.fromarray(t[0].permute(1, 2, 0).numpy())]))
        if crop:
            cropped.append(embedder.embed([Image.fromarray(c[0].permute(1, 2, 0).numpy())
                                           for c in crops(t, crop)]))
    out = {"": np.concatenate(whole), "n": len(items)}
    if crop:
        out["_crop"] = np.concatenate(cropped)
    return out


def compare_cmmd(gen: dict, real: dict) -> dict:
    """CMMD of two :func:`embeddings` results (see :func:`cmmd`)."""
    return _compare_sets(gen, real, "CMMD", lambda g, r, suffix: {
        f"cmmd{suffix}": judges.mmd(g, r),
        f"cmmd{suffix}_unbiased": judges.mmd(g, r, unbiased=True)})


CMMD_CAVEAT = ("CMMD is computed as the reference does, each set's pairs with itself "
               "included: from N and M images that adds up to 1000·0.02·(1/N + 1/M) (20 at "
               "N = M = 2, 2 at 20 images), so compare only at equal image counts; "
               "cmmd_unbiased leaves those pairs out and compares across counts")
