"""Metrics: prompt control (CLIP), photorealism (CLIP zero-shot and image statistics),
upscaler fidelity (PSNR, SSIM) and efficiency.

Each function says what it measures, its range and which direction is better.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import compat
from ..core.device import resolve_device
from ..core.errors import BadInput
from ..core.images import read_image
from ..generate.tiny import tiny_tokenizer
from ..sources import from_pretrained, is_offline

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
# Zero-shot realism: the first prompt is "real"; the others are what a fake looks like.
REALISM_PROMPTS = ("a photograph", "a painting", "a 3D render", "an illustration", "a cartoon")


@dataclass
class Clip:
    """A CLIP model and its processors; build one with :func:`load_clip`."""

    model: object
    tokenizer: object
    image_processor: object
    name: str
    device: object

    def embed(self, images=(), texts=()):
        """(image embeddings (N, D), text embeddings (M, D)), L2-normalised."""
        import torch

        out = []
        with torch.no_grad():
            if images:
                px = self.image_processor(images=[_rgb(i) for i in images],
                                          return_tensors="pt").pixel_values
                out.append(compat.clip_features(self.model.get_image_features(
                    pixel_values=px.to(self.device, self.model.dtype))))
            else:
                out.append(None)
            if texts:
                t = self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=77, return_tensors="pt").to(self.device)
                out.append(compat.clip_features(self.model.get_text_features(**t)))
            else:
                out.append(None)
        return tuple(None if e is None else torch.nn.functional.normalize(e.float(), dim=-1)
                     for e in out)

    def similarity(self, images, texts) -> np.ndarray:
        """Cosine similarity of every image with every text, (N, M), in [-1, 1]."""
        im, tx = self.embed(images, texts)
        return (im @ tx.T).cpu().numpy()


def _rgb(image):
    """A PIL image, an array or an image path, as a PIL RGB image."""
    from PIL import Image

    if isinstance(image, str) or hasattr(image, "__fspath__"):
        image = read_image(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image.convert("RGB")


def as_clip(clip, device="auto", offline: bool | None = None) -> Clip | None:
    """A Clip from a Clip, a model name, or None / "" (no CLIP metrics)."""
    if not clip:
        return None
    return clip if isinstance(clip, Clip) else load_clip(clip, device=device, offline=offline)


def load_clip(name: str = DEFAULT_CLIP, device="auto", offline: bool | None = None,
              processor: str | None = None) -> Clip:
    """A CLIP model by Hub id or folder (default ``openai/clip-vit-large-patch14``, the one
    CLIP-score papers use; found where pegu.sources finds every model: a folder, an attached
    Kaggle input, the Hugging Face cache or the Hub), or "tiny-clip": random weights built
    in code, for tests only. ``processor``: the repository of its tokenizer and image
    processor where the model's own has none (PickScore's)."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    dev = resolve_device(device)
    if name == "tiny-clip":
        model, tok, proc = _tiny_clip()
    else:
        def processors(where, **kw):
            return (CLIPTokenizer.from_pretrained(where, **kw),
                    CLIPImageProcessor.from_pretrained(where, **kw))

        def load(where, **kw):
            return (CLIPModel.from_pretrained(where, **kw),
                    *(() if processor else processors(where, **kw)))

        with compat.quiet_loading():
            loaded, _ = from_pretrained(load, name, marker="config.json",
                                        offline=is_offline(offline))
            if processor:
                (tok, proc), _ = from_pretrained(processors, processor,
                                                 marker="preprocessor_config.json",
                                                 offline=is_offline(offline))
                loaded = (loaded[0], tok, proc)
        model, tok, proc = loaded
    model = model.eval().to(dev, torch.float16 if dev.type == "cuda" else torch.float32)
    return Clip(model, tok, proc, name, dev)


def _tiny_clip():
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = tiny_tokenizer()
    n = len(tok)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1,
                         pad_token_id=n - 1, projection_dim=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8,
                           projection_dim=32),
        projection_dim=32)
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(cfg), tok, proc


# ---- prompt control ----

def clip_score(clip: Clip, images, prompts) -> list[float]:
    """How well each image matches its own prompt: 100 × max(cosine similarity, 0) between
    CLIP's image and text embeddings (the usual "CLIPScore"). Range 0–100, higher is
    better; ~30+ is a good match for ViT-L/14 on photos."""
    sims = clip.similarity(list(images), list(prompts))
    return [float(100 * max(sims[i, i], 0.0)) for i in range(len(sims))]


def attribute_control(clip: Clip, images, prompts) -> float:
    """Share of prompt edits the images follow: image i was generated from ``prompts[i]``
    (variants of one base prompt that differ in one attribute, same seed); it counts when
    CLIP ranks its own prompt first among all the variants. Range 0–1, higher is better;
    chance is 1/len(prompts)."""
    return float(np.mean(attribute_hits(clip, images, prompts)))


def attribute_hits(clip: Clip, images, prompts) -> list[bool]:
    """For each image of :func:`attribute_control`, whether CLIP ranks its own prompt first."""
    sims = clip.similarity(list(images), list(prompts))
    return [bool(h) for h in np.argmax(sims, axis=1) == np.arange(len(sims))]


def attribute_variants(base: str, attribute: str, values) -> list[str]:
    """Prompts that differ in one attribute: ``base`` with ``{attribute}`` filled in, e.g.
    ("portrait of a woman with {hair} hair", "hair", ["red", "black"])."""
    return [base.replace("{" + attribute + "}", v) for v in values]


# ---- photorealism ----

def clip_realism(clip: Clip, images, prompts=REALISM_PROMPTS) -> list[float]:
    """Probability that CLIP calls each image ``prompts[0]`` ("a photograph") rather than
    the others (a painting, a 3D render, an illustration, a cartoon): softmax over CLIP's
    scaled similarities. Range 0–1, higher is more photographic; 1/len(prompts) is chance."""
    import torch

    sims = torch.from_numpy(clip.similarity(list(images), list(prompts)))
    scale = float(clip.model.logit_scale.detach().exp())
    return torch.softmax(scale * sims, dim=1)[:, 0].tolist()


def _gray(image) -> np.ndarray:
    a = np.asarray(_rgb(image), dtype=np.float64)
    return a @ np.array([0.299, 0.587, 0.114])


def sharpness(image) -> float:
    """Variance of the Laplacian of the gray image (8-bit units²; Pech-Pacheco et al. 2000).
    Range ≥ 0, higher is sharper; blur lowers it. Compare images of the same size only."""
    g = _gray(image)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def noise_level(image) -> float:
    """Standard deviation of Gaussian noise in the gray image, 8-bit units (Immerkær 1996,
    "Fast noise variance estimation"). Range ≥ 0, lower is cleaner. Fine texture reads as a
    little noise; added noise of σ combines with it as variances do (≈ √(base² + σ²))."""
    g = _gray(image)
    h, w = g.shape
    if h < 3 or w < 3:
        raise BadInput("noise_level needs an image of at least 3x3 pixels")
    k = (g[:-2, :-2] - 2 * g[:-2, 1:-1] + g[:-2, 2:] - 2 * g[1:-1, :-2] + 4 * g[1:-1, 1:-1]
         - 2 * g[1:-1, 2:] + g[2:, :-2] - 2 * g[2:, 1:-1] + g[2:, 2:])
    return float(np.sqrt(np.pi / 2) * np.abs(k).sum() / (6 * (w - 2) * (h - 2)))


def detail_ratio(reference, image, box=None, sigma: float = 1.0) -> float:
    """Fine texture kept: the energy of ``image``'s high frequencies (gray image minus its
    Gaussian blur of ``sigma`` px) over the ``reference``'s, in ``box`` (x0, y0, x1, y1;
    default the whole image; both images the same size). 1 = the original's texture, below
    1 smoothed (waxy skin), above 1 sharpened or noisy."""
    from scipy.ndimage import gaussian_filter

    a, b = _gray(reference), _gray(image)
    if a.shape != b.shape:
        raise BadInput(f"detail_ratio needs images of one size, got {a.shape[::-1]} and "
                         f"{b.shape[::-1]}")
    x0, y0, x1, y1 = box or (0, 0, a.shape[1], a.shape[0])

    def energy(g):
        high = g - gaussian_filter(g, sigma)
        return float((high[y0:y1, x0:x1] ** 2).mean())

    ref = energy(a)
    return energy(b) / ref if ref > 0 else float("nan")


def seam_ratio(image, box, offsets=range(3, 9)) -> float:
    """How much a pasted region's border shows: the mean jump between neighbouring pixels
    across the border of ``box`` (x0, y0, x1, y1; all four sides, gray and colour channels
    alike) over the mean jump across lines 3–8 px inside and outside it. About 1: the border
    is like any other line of the image; well above 1: a visible square (a seam or a colour
    step). Boxes touching the image edge skip those sides."""
    a = np.asarray(_rgb(image), dtype=np.float64)
    h, w = a.shape[:2]
    x0, y0, x1, y1 = box

    def jump_cols(x):  # |I[:, x] - I[:, x-1]| along the box's rows
        if not 1 <= x < w:
            return None
        return np.abs(a[y0:y1, x] - a[y0:y1, x - 1]).mean()

    def jump_rows(y):
        if not 1 <= y < h:
            return None
        return np.abs(a[y, x0:x1] - a[y - 1, x0:x1]).mean()

    border, reference = [], []
    for line, jump, inward in ((x0, jump_cols, 1), (x1, jump_cols, -1),
                               (y0, jump_rows, 1), (y1, jump_rows, -1)):
        at = jump(line)
        if at is None:  # the box touches the image's edge there
            continue
        border.append(at)
        reference += [v for d in offsets for v in (jump(line + inward * d),
                                                   jump(line - inward * d)) if v is not None]
    if not border or not reference:
        raise BadInput(f"box {box} has no border inside the {w}x{h} image to measure")
    ref = float(np.mean(reference))
    return float(np.mean(border)) / ref if ref > 0 else float("inf")


# ---- fidelity ----

def psnr(reference, image, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of ``image`` against ``reference`` (same size).
    Higher is better; identical images give inf."""
    a, b = (np.asarray(x, dtype=np.float64) for x in (reference, image))
    if a.shape != b.shape:
        raise BadInput(f"psnr needs equal shapes, got {a.shape} and {b.shape}")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(reference, image, data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004: 11×11 Gaussian window, σ = 1.5, K1 = 0.01,
    K2 = 0.03), averaged over pixels and channels. Range −1–1, higher is better; 1 = equal."""
    from scipy.ndimage import gaussian_filter

    a, b = (np.asarray(x, dtype=np.float64) for x in (reference, image))
    if a.shape != b.shape:
        raise BadInput(f"ssim needs equal shapes, got {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    scores = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]

        def blur(z):
            return gaussian_filter(z, sigma=1.5, truncate=3.5)

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        pad = 5  # drop the border the window does not cover fully, as scikit-image does
        scores.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(scores))


def upscaler_fidelity(photo, upscalers, factor: int = 4):
    """Downscale a real photo by ``factor`` (antialiased bicubic), upscale it back with each
    upscaler and with bicubic and Lanczos, and compare with the original.

    Returns a DataFrame: method, psnr_db (higher is better), ssim (higher is better),
    seconds. ``upscalers``: loaded Upscalers.
    """
    import time

    import pandas as pd
    from PIL import Image

    photo = _rgb(photo)
    w, h = (photo.width // factor) * factor, (photo.height // factor) * factor
    photo = photo.crop((0, 0, w, h))
    small = photo.resize((w // factor, h // factor), Image.BICUBIC, reducing_gap=None)
    methods = {"bicubic": lambda: small.resize((w, h), Image.BICUBIC),
               "lanczos": lambda: small.resize((w, h), Image.LANCZOS)}
    for up in upscalers:
        methods[up.name] = lambda up=up: up.upscale(small, target=(w, h))
    rows = []
    for name, fn in methods.items():
        t0 = time.perf_counter()
        out = fn()
        rows.append({"method": name, "psnr_db": round(psnr(photo, out), 3),
                     "ssim": round(ssim(photo, out), 4),
                     "seconds": round(time.perf_counter() - t0, 3)})
    return pd.DataFrame(rows)


# ---- efficiency ----

def images_per_gpu_hour(seconds_per_image: float) -> float:
    """Throughput: 3600 / seconds per image. Higher is better."""
    if seconds_per_image <= 0:
        raise BadInput("seconds per image must be positive")
    return 3600.0 / seconds_per_image
