"""The `pegu` command as a user runs it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pegu.cli import main


@pytest.fixture()
def photo(astronaut, tmp_path) -> Path:
    p = tmp_path / "astro.png"
    Image.fromarray(astronaut[200:248, 180:228]).save(p)
    return p


def run(*args) -> int:
    return main([str(a) for a in args])


def test_upscale_writes_png_and_refuses_to_overwrite(photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("upscale", photo, "--model", "animevideov3", "--target", "160x160",
               "--out", out) == 0
    made = out / "astro_realesr-animevideov3_160x160.png"
    assert Image.open(made).size == (160, 160)
    before = made.read_bytes()
    assert run("upscale", photo, "--model", "animevideov3", "--target", "160x160",
               "--out", out) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert made.read_bytes() == before
    assert run("upscale", photo, "--model", "animevideov3", "--target", "160x160",
               "--out", out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == [made.name]


def test_upscale_with_the_ncnn_engine_matches_torch(photo, tmp_path, capsys):
    assert run("upscale", photo, "--model", "animevideov3", "--out", tmp_path / "t") == 0
    assert run("upscale", photo, "--model", "animevideov3", "--engine", "ncnn",
               "--batch", "2", "--tile", "64", "--out", tmp_path / "n") == 0
    assert "cpu (fp32, ncnn)" in capsys.readouterr().err
    name = "astro_realesr-animevideov3_x4.png"
    a, b = (np.asarray(Image.open(tmp_path / d / name)).astype(int) for d in "tn")
    assert a.shape == (192, 192, 3) and np.abs(a - b).max() <= 1


def test_upscale_default_scale_and_16_bit(tmp_path, astronaut):
    import cv2

    rgb16 = astronaut[:20, :24].astype(np.uint16) * 257
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), rgb16[..., ::-1])
    assert run("upscale", src, "--model", "animevideov3", "--out", tmp_path / "o") == 0
    out = cv2.imread(str(tmp_path / "o" / "deep_realesr-animevideov3_x4.png"),
                     cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (80, 96, 3)


def test_upscale_bad_input_leaves_nothing(photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert run("upscale", tmp_path / "nope.png", "--out", out) == 2
    assert "no such image" in capsys.readouterr().err
    (tmp_path / "notes.png").write_text("not a picture")
    assert run("upscale", photo, tmp_path / "notes.png", "--out", out) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert run("upscale", photo, "--model", "x4plsu", "--out", out) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert run("upscale", photo, "--target", "160x80", "--out", out) == 2
    assert "fit='cover'" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run("upscale", photo, "--model", "animevideov3", "--out", blocker / "sub") == 2
    assert "cannot write to the output folder" in capsys.readouterr().err
    assert run("upscale", photo, "--dtype", "fp16", "--device", "cpu", "--out", out) == 2
    assert "fp16 on the CPU" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("upscale", photo, "--target", "0x2048")
    with pytest.raises(SystemExit):  # bounded before any model loads
        run("upscale", photo, "--target", "100000x100000")
    assert "at most 16384 pixels" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_models_lists_the_registry(capsys):
    assert run("models") == 0
    text = capsys.readouterr().out
    for name in ("RealESRGAN_x4plus", "RealESRGAN_x2plus", "realesr-general-x4v3",
                 "realesr-general-wdn-x4v3", "RealESRGAN_x4plus_anime_6B",
                 "realesr-animevideov3"):
        assert name in text
    assert "offline copy" in text and "download" in text
    for name in ("sdxl-base", "realistic-vision-v6", "epicrealism", "cyberrealistic-v3",
                 "tiny-sd15", "tiny-sdxl", "stabilityai/stable-diffusion-xl-base-1.0"):
        assert name in text


def test_demo_end_to_end(tmp_path, capsys):
    assert run("demo", "--target", "512x512", "--photo-size", "48", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "pipeline: generate" in out and "photo: RealESRGAN_x4plus" in out
    assert "photo: RealSR_DF2K_x4" in out  # the offline photo pick beside it
    assert "peak_mib" in out
    assert Image.open(tmp_path / "pipeline_tiny-sd15_512x512.png").size == (512, 512)
    for name in ("RealESRGAN_x4plus", "RealSR_DF2K_x4", "bicubic", "lanczos"):
        assert Image.open(tmp_path / f"astronaut_{name}_192x192.png").size == (192, 192)
    fig = Image.open(tmp_path / "astronaut_comparison_192x192.png")
    assert fig.size[0] > 600


def test_console_script_and_light_import():
    bindir = Path(sys.executable).parent
    r = subprocess.run([str(bindir / "pegu"), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("pegu ")
    r = subprocess.run([sys.executable, "-c", "import sys, pegu; "
                        "print(sorted(m for m in ('torch', 'diffusers', 'basicsr') "
                        "if m in sys.modules))"], capture_output=True, text=True,
                       env={**os.environ})
    assert r.stdout.strip() == "[]"
