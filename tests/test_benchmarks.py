"""The benchmark scripts run end to end (tiny sizes, CPU) and print their tables."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd) -> str:
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w²])", line)]


def test_gpu_script_smoke_on_the_cpu():
    out = _run("bash", "benchmarks/gpu.sh", "--smoke")
    assert "Upscaler x4plus, 64² -> 256²" in out and "Prompt -> 256², 2 steps" in out
    # the last line of each name: the final tables (pipeline rows also print as they finish)
    rows = {name: [line for line in out.splitlines() if line.strip().startswith(name)][-1]
            for name in ("pegu float32", "RealESRGANer fp32 untiled", "RealESRGANer fp32 tile",
                         "sd15 64² + x4plus", "sdxl 128² + x2plus",
                         "sdxl 256² direct")}
    for name, line in rows.items():
        seconds, *_ = _numbers(line.split(name, 1)[1])
        assert seconds > 0, line
    direct = _numbers(rows["sdxl 256² direct"].split("direct", 1)[1])
    assert direct[1] == 1.0  # its own "x direct"
    # same weights, same untiled input: pegu and RealESRGANer agree within 1/255
    assert _numbers(rows["RealESRGANer fp32 untiled"].split("untiled", 1)[1])[-1] <= 1
    # the refine table: SD 1.5's architecture, untiled, tiled, tiled with a ControlNet
    assert "Refine SD 1.5 (random weights), strength 0.3, and direct generation" in out
    for method in ("refine untiled", "refine tiled", "refine tiled + ControlNet tile",
                   "direct"):
        line = [x for x in out.splitlines() if f"sd15 {method} 256²" in x][-1]
        assert _numbers(line.split("256²", 1)[1])[0] > 0, line
    # the extras: spandrel's families in the dtype pegu picks, the face stage finds the face
    assert "Community upscalers (spandrel" in out
    for name in ("ESRGAN", "SwinIR", "DAT"):
        line = [x for x in out.splitlines() if x.strip().startswith(f"{name} 64² -> 256²")][-1]
        assert _numbers(line.split("256²", 1)[1])[0] > 0 and "float32" in line, line
    face = [x for x in out.splitlines() if x.strip().startswith("face stage 256²")][-1]
    assert _numbers(face.split("256²", 1)[1])[-1] == 1, face  # the astronaut's one face
    # the frontier's cost: pegu's tiny models through pegu's path, every lever
    assert "Efficiency frontier: prompt -> 256²" in out
    table = out.split("Efficiency frontier")[1]

    def frontier_row(family, variant, way):
        line = [x for x in table.splitlines()
                if re.match(rf"\s*{family}\s+{re.escape(variant)}\s+{way}\s", x)][-1]
        steps, seconds, speedup, peak, calls, deep = _numbers(line.split(way, 1)[1])
        assert seconds > 0 and peak > 0, line
        return steps, calls, deep

    for family in ("sd15", "sdxl"):
        assert frontier_row(family, "standard", "upscale") == (8, 8, 8)
        assert frontier_row(family, "lcm", "upscale") == (4, 4, 4)  # the card's 4 steps
        steps, calls, deep = frontier_row(family, "standard + DeepCache 3", "upscale")
        assert (calls, deep) == (8, 3)  # the deep part at steps 0, 3 and 6 only
        frontier_row(family, "standard + ToMe 0.5", "tiled refine")
    frontier_row("sdxl", "lightning-4", "direct")


def test_upscale_benchmark_smoke():
    out = _run(sys.executable, "benchmarks/upscale.py", "--smoke", "--scale", "--tradeoff",
               "--memory")
    for method in ("pegu fp32", "pegu ncnn", "pegu bf16", "RealESRGANer", "ncnn fp32",
                   "ncnn bf16"):
        assert re.search(rf"32x32 +{method} ", out), method
    ncnn_row = next(line for line in out.splitlines() if " pegu ncnn " in line)
    assert _numbers(ncnn_row.split("pegu ncnn", 1)[1])[2] <= 1  # max /255: exact path
    assert "Memory and scale" in out and "128x128 512x512" in out
    assert "Tiling trade-off at 128x128" in out and "Tile 1/" not in out
    assert "Peak memory over input sizes" in out and re.search(r"128x128 +512x512", out)


def test_fidelity_benchmark_smoke(tmp_path):
    out = _run(sys.executable, "benchmarks/fidelity.py", "--smoke", "--figures",
               str(tmp_path))
    for method in ("bicubic", "lanczos", "realesr-animevideov3"):
        assert re.search(rf"^{method} +\d", out, re.M), method
    assert "Means over the photos" in out and "peak_mib" in out
    assert {p.name for p in tmp_path.glob("*.png")} == {
        "astronaut.png", "coffee.png", "chelsea.png", "rocket.png"}


def test_refine_benchmark_smoke():
    out = _run(sys.executable, "benchmarks/refine.py", "--smoke")
    for method in ("refine", "refine tiled", "refine tiled \\+ ControlNet", "direct"):
        assert re.search(rf"768² +{method} +\d", out), method


def test_flop_count_of_the_full_size_paths():
    """Counted on the meta device with the real SD 1.5 / SDXL / RRDBNet architectures."""
    out = _run(sys.executable, "benchmarks/pipeline.py", "--flops")
    rows = {}
    for line in out.splitlines():
        for name in ("sd15 512² + x4plus", "sdxl 1024² + x2plus", "sdxl 2048² direct"):
            if line.strip().startswith(name):
                rows[name] = _numbers(line.split(name, 1)[1])
    unet, vae, up, total, ratio = rows["sd15 512² + x4plus"]
    assert 30 < unet < 50 and 8 < up < 11  # ~0.8 TFLOP per UNet pass at 512², 9.4 for x4plus
    assert ratio > 10  # direct 2048² needs more than 10x the compute of 512² + x4plus
    assert rows["sdxl 2048² direct"][-1] == 1.0 and rows["sdxl 1024² + x2plus"][-1] > 3
