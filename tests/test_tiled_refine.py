"""Refine at the target in latent tiles (MultiDiffusion): equal to the untiled refine when
one tile covers the image, UNet memory bounded by the tile, no seams, SD 1.5 and SDXL,
through the pipeline, the PNG recipe and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pegu
from pegu.lab.metrics import seam_ratio
from pegu.core.settings import GenerateSettings, RunSettings

SETTINGS = GenerateSettings("portrait photo", steps=3, seed=1)


@pytest.fixture(scope="module")
def sd15():
    return pegu.load_generator("tiny-sd15", device="cpu")


def _unet_sizes(generator):
    """Record the latent size of every UNet call (a hook on its first convolution)."""
    from diffusers import AutoPipelineForImage2Image

    if getattr(generator, "_img2img", None) is None:
        generator._img2img = AutoPipelineForImage2Image.from_pipe(generator.pipe)
    sizes = []
    hook = generator._img2img.unet.conv_in.register_forward_pre_hook(
        lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
    return sizes, hook


def test_one_tile_covering_the_image_is_the_untiled_refine(sd15, astronaut):
    img = Image.fromarray(astronaut)  # 512²: one 64² latent tile of tiny-sd15 (native 512)
    tiled = sd15.refine(img, SETTINGS, 0.3, progress=False, tiled=True).image
    plain = sd15.refine(img, SETTINGS, 0.3, progress=False).image
    assert np.array_equal(np.asarray(tiled), np.asarray(plain))


def test_tiles_bound_the_unet_and_leave_no_seam(sd15, astronaut):
    img = Image.fromarray(astronaut).resize((1024, 1024), Image.LANCZOS)
    sizes, hook = _unet_sizes(sd15)
    try:
        tiled = sd15.refine(img, SETTINGS, 0.3, progress=False, tiled=True).image
    finally:
        hook.remove()
    assert tiled.size == (1024, 1024)
    assert max(max(s) for s in sizes) <= 64  # never more than the model's native latent
    assert len(sizes) >= 9  # 3 x 3 tiles per step
    plain = sd15.refine(img, SETTINGS, 0.3, progress=False).image
    assert "forward" not in sd15._img2img.unet.__dict__  # the UNet is itself again
    # the tiles' borders in pixels (latent spans 0-54, 37-91, 74-128, × 8): no seam
    for box in [(296, 296, 728, 728), (0, 296, 432, 728), (296, 0, 728, 432)]:
        assert seam_ratio(tiled, box) <= 1.15 * seam_ratio(plain, box), box


def test_sdxl_tiles_carry_its_size_conditioning(astronaut):
    xl = pegu.load_generator("tiny-sdxl", device="cpu")  # native 1024: 128² latent tiles
    img = Image.fromarray(astronaut).resize((1280, 1280), Image.LANCZOS)
    sizes, hook = _unet_sizes(xl)
    try:
        out = xl.refine(img, SETTINGS, 0.3, progress=False, tiled=True).image
    finally:
        hook.remove()
    assert out.size == (1280, 1280) and max(max(s) for s in sizes) <= 128


def test_pipeline_and_cli_run_the_tiled_refine(sd15, tmp_path, capsys):
    from pegu.cli import main
    from pegu.pipeline.recipe import read_settings

    settings = RunSettings(GenerateSettings("portrait", width=128, height=128, steps=2),
                           model="tiny-sd15", target=(640, 640), refine=0.3, refine_tiled=True,
                           upscale={"model": "realesr-animevideov3"})
    result = pegu.run(settings, sd15, progress=False)
    stages = [s.stage for s in result.stages]
    assert stages[-2:] == ["upscale", "refine (tiled)"] and result.image.size == (640, 640)
    assert read_settings(result.save(tmp_path / "r.png")).refine_tiled
    out = tmp_path / "cli.png"
    assert main(["generate", "portrait", "--model", "tiny-sd15", "--size", "128x128",
                 "--target", "640x640", "--steps", "2", "--refine", "0.3", "--refine-tiled",
                 "--upscaler", "realesr-animevideov3", "--out", str(out)]) == 0
    assert Image.open(out).size == (640, 640) and read_settings(out).refine_tiled
    with pytest.raises(ValueError, match="refine_tiled needs refine"):
        RunSettings(GenerateSettings("x"), refine_tiled=True)
    with pytest.raises(ValueError, match="leave refine_size out"):
        RunSettings(GenerateSettings("x"), refine=0.3, refine_tiled=True, refine_size=1024)
    assert main(["generate", "x", "--model", "tiny-sd15", "--refine-tiled"]) == 2
    assert "refine_tiled needs refine" in capsys.readouterr().err
