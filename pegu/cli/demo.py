"""``pegu demo``: a real photograph to the target size, Real-ESRGAN beside bicubic and
Lanczos, with a comparison figure and a table of time and peak memory."""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from ..core.device import describe
from ..core.errors import BadInput, MissingPackage
from ..core.images import ensure_writable_dir, write_png
from ..core.registry import DEFAULT_UPSCALER, GENERATORS, UPSCALERS
from ..core.settings import TARGET, GenerateSettings, RunSettings, UpscaleSettings
from ..generate import load_generator
from ..lab.plots import close, side_by_side
from ..pipeline import measure_stage, run, stages_table
from ..sources import at_hand
from ..upscale import load_upscaler

DEMO_MODEL = "tiny-sd15"  # a smoke-test model: runs offline anywhere
DEMO_PHOTO_SIZE = 256  # the photograph's crop edge, px
DEMO_OUT = Path("out/demo")


def demo_photo(size: int = 512):
    """scikit-image's astronaut (NASA, public domain), cropped to ``size``² (≤ 512) around
    her face."""
    if not 1 <= size <= 512:
        raise BadInput(f"the demo photo is 512x512; choose an input size in 1..512, got {size}")
    try:
        from skimage import data
    except ImportError:
        raise MissingPackage("the demo photo comes from scikit-image: pip install "
                             "scikit-image") from None
    from PIL import Image

    photo = data.astronaut()
    x0, y0 = (min(max(0, c - size // 2), 512 - size) for c in (232, 190))  # around the face
    return Image.fromarray(photo[y0:y0 + size, x0:x0 + size])


def run_demo(*, model: str = DEMO_MODEL, target=TARGET,
             upscaler: str = DEFAULT_UPSCALER, photo_size: int = DEMO_PHOTO_SIZE,
             device="auto", out: Path = DEMO_OUT, offline: bool = True, progress: bool = True):
    """pegu's main job, shown on this machine; writes into ``out`` and prints a table.

    1. The pipeline: ``model`` generates at its native size, ``upscaler`` takes it to
       ``target``; saved as PNG with its recipe. 2. A real photograph (``photo_size``²)
       upscaled 4x by ``upscaler`` (and RealSR, where its weights are at hand) beside bicubic
       and Lanczos, in a comparison figure.
    Returns the table (pandas DataFrame: stage, seconds, peak MiB, memory kind).
    """
    from PIL import Image

    out = ensure_writable_dir(Path(out))
    photo = demo_photo(photo_size)
    tw, th = target
    gen = load_generator(model, device=device, offline=offline)
    up = load_upscaler(upscaler, device=gen.device, offline=offline)
    # the photograph also goes through RealSR, the offline photo pick of benchmarks/fidelity.py
    others = [load_upscaler(PHOTO_PICK, device=gen.device, offline=offline)
              ] if up.name != PHOTO_PICK and at_hand(UPSCALERS[PHOTO_PICK], offline) else []
    tiny = GENERATORS.get(gen.name) is not None and GENERATORS[gen.name].tiny
    print(f"pegu demo on {describe(gen.device)}\n"
          f"  text-to-image: {gen.name}{' (SMOKE TEST MODEL: random weights, draws noise)' if tiny else ''}"
          f", from {gen.source}\n  upscaler: {up.name} ({up.dtype_name},"
          f" tile {up.tile}), weights from {up.source}", file=sys.stderr)
    settings = RunSettings(GenerateSettings(DEMO_PROMPT, seed=0), model=gen.name,
                           upscale=UpscaleSettings(up.name), target=(tw, th))
    result = run(settings, gen, up, progress=progress)
    stages = [replace(s, stage=f"pipeline: {s.stage}") for s in result.stages]
    files = {"pipeline": result.save(out / f"pipeline_{gen.name}_{tw}x{th}.png", overwrite=True)}

    def stage(name, fn):
        return measure_stage(stages, name, gen.device, fn)

    n4 = (4 * photo_size, 4 * photo_size)
    panels = {}
    for u in [up, *others]:
        panels[u.name] = stage(f"photo: {u.name}", lambda u=u: u.upscale(
            photo, target=n4, progress=progress))
    bicubic = stage("photo: bicubic", lambda: photo.resize(n4, Image.BICUBIC))
    lanczos = stage("photo: lanczos", lambda: photo.resize(n4, Image.LANCZOS))
    size = f"{n4[0]}x{n4[1]}"
    files["photo"] = write_png(photo, out / f"astronaut_input_{photo_size}x{photo_size}.png")
    for name, img in (*panels.items(), ("bicubic", bicubic), ("lanczos", lanczos)):
        files[f"photo {name}"] = write_png(img, out / f"astronaut_{name}_{size}.png")
    fig = side_by_side({"bicubic": bicubic, "Lanczos": lanczos, **panels},
                       path=out / f"astronaut_comparison_{size}.png",
                       title=f"{photo_size}² photo → {size}")
    files["figure"] = out / f"astronaut_comparison_{size}.png"
    close(fig)
    table = stages_table(stages)
    print(result.summary())
    print(table.to_string(index=False))
    for name, path in files.items():
        print(f"  {name:28} {path}")
    return table


PHOTO_PICK = "RealSR_DF2K_x4"
DEMO_PROMPT = ("RAW photo, portrait of a smiling woman with curly red hair, soft natural "
               "light, city park background, film grain")
