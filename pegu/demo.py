"""``pegu demo``: a real photograph to the target size, Real-ESRGAN beside bicubic and
Lanczos, with a comparison figure and a table of time and peak memory."""
from __future__ import annotations

import sys
from pathlib import Path


def demo_photo(size: int = 512):
    """scikit-image's astronaut (NASA, public domain), center-cropped to ``size``² (≤ 512)."""
    if not 1 <= size <= 512:
        raise ValueError(f"the demo photo is 512x512; choose an input size in 1..512, got {size}")
    try:
        from skimage import data
    except ImportError:
        raise RuntimeError("the demo photo comes from scikit-image: pip install scikit-image") \
            from None
    from PIL import Image

    photo = data.astronaut()
    y0 = x0 = (512 - size) // 2
    return Image.fromarray(photo[y0:y0 + size, x0:x0 + size])


def run_demo(*, input_size: int = 512, target=(2048, 2048), upscaler: str = "RealESRGAN_x4plus",
             device="auto", out: Path = Path("out/demo"), offline: bool = True):
    """Run the demo, write its files into ``out`` and print its table; returns the table
    (a pandas DataFrame: stage, seconds, peak memory in MiB, memory kind)."""
    import pandas as pd
    from PIL import Image

    from .device import Measure, describe, resolve_device
    from .images import ensure_writable_dir, write_png
    from .upscale import load_upscaler

    out = Path(out)
    ensure_writable_dir(out)
    photo = demo_photo(input_size)
    dev = resolve_device(device)
    tw, th = target
    rows = []

    def stage(name, fn):
        with Measure(dev) as m:
            value = fn()
        rows.append({"stage": name, "seconds": round(m.seconds, 2),
                     "peak_mib": round(m.peak_bytes / 2**20), "memory": m.memory_kind})
        return value

    up = stage("load upscaler", lambda: load_upscaler(upscaler, device=dev, offline=offline))
    print(f"pegu demo on {describe(dev)}\n  photo: scikit-image astronaut, {input_size}x"
          f"{input_size} -> {tw}x{th}\n  upscaler: {up.name} "
          f"({str(up.dtype).removeprefix('torch.')}, tile {up.tile}), weights from {up.source}",
          file=sys.stderr)
    result = stage(f"upscale {up.name}", lambda: up.run(photo, target=target, progress=True))
    bicubic = stage("upscale bicubic", lambda: photo.resize(target, Image.BICUBIC))
    lanczos = stage("upscale lanczos", lambda: photo.resize(target, Image.LANCZOS))
    files = {"input": write_png(photo, out / f"astronaut_input_{input_size}x{input_size}.png")}
    files.update({name: write_png(img, out / f"astronaut_{name}_{tw}x{th}.png") for name, img
                  in ((up.name, result.image), ("bicubic", bicubic), ("lanczos", lanczos))})
    files["figure"] = comparison_figure(
        {"bicubic": bicubic, "Lanczos": lanczos, up.name: result.image},
        out / f"astronaut_comparison_{tw}x{th}.png",
        title=f"{input_size}² photo → {tw}×{th}")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    for name, path in files.items():
        print(f"  {name:20} {path}")
    return table


def comparison_figure(images: dict, path: Path, title: str = "", zoom=(0.3, 0.15, 0.25)):
    """Save a figure: each image in full (top row) and a zoomed crop (bottom row).
    zoom: (x, y, size) of the crop as fractions of the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .images import write_png

    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 8.4), squeeze=False)
    for col, (label, img) in enumerate(images.items()):
        w, h = img.size
        x, y, s = int(zoom[0] * w), int(zoom[1] * h), max(1, int(zoom[2] * min(w, h)))
        axes[0, col].imshow(img)
        axes[0, col].add_patch(plt.Rectangle((x, y), s, s, fill=False, color="red", lw=1.5))
        axes[0, col].set_title(label)
        axes[1, col].imshow(img.crop((x, y, x + s, y + s)), interpolation="nearest")
        axes[1, col].set_title(f"{label}, zoom")
        for ax in axes[:, col]:
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout(h_pad=2)
    fig.canvas.draw()
    image = _figure_image(fig)
    plt.close(fig)
    return write_png(image, path)


def _figure_image(fig):
    from PIL import Image

    rgba = fig.canvas.buffer_rgba()
    return Image.frombuffer("RGBA", fig.canvas.get_width_height(), rgba).convert("RGB")
