"""The refine's tile ControlNet (Ultimate SD Upscale's way): conditioned on the image being
refined, untiled and per latent tile, SD 1.5 and SDXL, through the pipeline, the PNG recipe
and the CLI; found in a folder, a Kaggle input or refused offline with what to do."""
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


class _control_calls:
    """(latent size, control image size) of every ControlNet forward that ran (hooks on its
    first convolution and its condition encoder)."""

    def __init__(self, generator, name="tiny-tile-sd15"):
        net = generator._controlnet(name).model
        self.latents, self.conds = [], []
        self.hooks = [m.register_forward_pre_hook(lambda m, a, out=out: out.append(
            tuple(a[0].shape[-2:]))) for m, out in ((net.conv_in, self.latents),
                                                  (net.controlnet_cond_embedding, self.conds))]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()

    @property
    def calls(self):
        assert len(self.latents) == len(self.conds)
        return list(zip(self.latents, self.conds))


def test_control_changes_the_refine_and_one_tile_equals_untiled(sd15, astronaut):
    img = Image.fromarray(astronaut)  # 512²: one 64² latent tile of tiny-sd15
    plain = sd15.refine(img, SETTINGS, 0.5, progress=False)
    controlled = sd15.refine(img, SETTINGS, 0.5, progress=False, control=1.0)
    tiled = sd15.refine(img, SETTINGS, 0.5, progress=False, control=1.0, tiled=True)
    assert plain.controlnet is None and controlled.controlnet == "tiny-tile-sd15"
    assert "built in code" in controlled.controlnet_source
    a, b = (np.asarray(r.image, dtype=float) for r in (plain, controlled))
    assert np.abs(a - b).mean() > 1  # the ControlNet's residuals reach the UNet
    assert np.array_equal(np.asarray(tiled.image), np.asarray(controlled.image))
    weaker = np.asarray(sd15.refine(img, SETTINGS, 0.5, progress=False, control=0.2).image,
                        dtype=float)
    assert np.abs(a - weaker).mean() < np.abs(a - b).mean()  # the weight scales it
    with pytest.raises(ValueError, match=r"ControlNet weight in \(0, 2\]"):
        sd15.refine(img, SETTINGS, 0.5, control=3.0)


def test_tiled_control_runs_per_tile_on_the_tiles_part_and_leaves_no_seam(sd15, astronaut):
    img = Image.fromarray(astronaut).resize((1024, 1024), Image.LANCZOS)
    with _control_calls(sd15) as seen:
        tiled = sd15.refine(img, SETTINGS, 0.5, progress=False, control=1.0, tiled=True).image
    calls = seen.calls
    assert tiled.size == (1024, 1024) and len(calls) >= 9  # 3 x 3 tiles per step
    for latent, cond in calls:  # never more than the native tile; the image's matching part
        assert max(latent) <= 64 and cond == (8 * latent[0], 8 * latent[1])
    net = sd15._controlnet("tiny-tile-sd15").model
    assert "forward" not in net.__dict__ and "forward" not in sd15.pipe.unet.__dict__
    plain = sd15.refine(img, SETTINGS, 0.5, progress=False, control=1.0).image
    for box in [(296, 296, 728, 728), (0, 296, 432, 728), (296, 0, 728, 432)]:
        assert seam_ratio(tiled, box) <= 1.15 * seam_ratio(plain, box), box


def test_sdxl_control_tiles_carry_its_size_conditioning(astronaut):
    xl = pegu.load_generator("tiny-sdxl", device="cpu")  # native 1024: 128² latent tiles
    img = Image.fromarray(astronaut).resize((1280, 1280), Image.LANCZOS)
    with _control_calls(xl, "tiny-tile-sdxl") as seen:
        out = xl.refine(img, SETTINGS, 0.5, progress=False, control=0.8, tiled=True)
    assert out.image.size == (1280, 1280) and out.controlnet == "tiny-tile-sdxl"
    assert len(seen.calls) >= 4 and all(max(latent) <= 128 and cond == (8 * latent[0],
                                        8 * latent[1]) for latent, cond in seen.calls)
    with pytest.raises(ValueError, match="'tile-sd15' is for sd15 models.*use 'tiny-tile-sdxl'"):
        xl.refine(img, SETTINGS, 0.5, control=1.0, controlnet="tile-sd15")


def test_pipeline_and_cli_record_the_controlnet(sd15, tmp_path, capsys):
    from pegu.cli import main
    from pegu.pipeline.recipe import read_settings

    settings = RunSettings(GenerateSettings("portrait", width=128, height=128, steps=2),
                           model="tiny-sd15", target=(640, 640), refine=0.5, refine_tiled=True,
                           refine_control=1.0, upscale={"model": "realesr-animevideov3"})
    result = pegu.run(settings, sd15, progress=False)
    assert result.image.size == (640, 640)
    assert result.settings.controlnet == "tiny-tile-sd15"
    saved = read_settings(result.save(tmp_path / "r.png"))
    assert (saved.refine_control, saved.controlnet) == (1.0, "tiny-tile-sd15")
    out = tmp_path / "cli.png"
    assert main(["generate", "portrait", "--model", "tiny-sd15", "--size", "128x128",
                 "--target", "256x256", "--steps", "2", "--refine", "0.5", "--refine-control",
                 "--upscaler", "realesr-animevideov3", "--out", str(out)]) == 0
    assert Image.open(out).size == (256, 256)
    assert read_settings(out).refine_control == 1.0
    # refused before any work, each saying what to do
    assert main(["generate", "x", "--model", "tiny-sd15", "--refine-control"]) == 2
    assert "give refine" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "tiny-sd15", "--refine", "0.4",
                 "--refine-control", "--controlnet", "tile-sdxl"]) == 2
    assert "'tile-sdxl' is for sdxl models" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "tiny-sd15", "--refine", "0.4",
                 "--refine-control", "--controlnet", "tiles-sd15"]) == 2
    assert "Did you mean 'tile-sd15'" in capsys.readouterr().err
    # a real model's ControlNet, offline and nowhere on this machine
    assert main(["generate", "x", "--model", "realistic-vision-v6", "--refine", "0.4",
                 "--refine-control", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "lllyasviel/control_v11f1e_sd15_tile" in err and "hf download" in err
    with pytest.raises(ValueError, match="give refine_control"):
        RunSettings(GenerateSettings("x"), refine=0.3, controlnet="tile-sd15")


def test_controlnet_from_a_folder_and_a_kaggle_input(sd15, astronaut, tmp_path, monkeypatch,
                                                      capsys):
    from pegu.cli import main
    from pegu.generate.controlnet import load_controlnet
    from pegu.sources import availability as controlnet_availability
    from pegu.core.registry import CONTROLNETS
    from pegu.generate.tiny import build_tiny_controlnet

    folder = tmp_path / "my-tile"
    build_tiny_controlnet("sd15").save_pretrained(folder)
    img = Image.fromarray(astronaut).resize((256, 256))
    out = sd15.refine(img, SETTINGS, 0.5, progress=False, control=1.0, controlnet=str(folder))
    assert out.controlnet == str(folder) and out.image.size == (256, 256)
    # attached on Kaggle as a model whose path names the repo: found, loaded offline
    spec = CONTROLNETS["tile-sd15"]
    mount = tmp_path / "input" / "models" / "someone" / "control_v11f1e_sd15_tile" / \
        "pytorch" / "default" / "1"
    build_tiny_controlnet("sd15").save_pretrained(mount)
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    assert controlnet_availability(spec) == "kaggle input"
    net, source = load_controlnet(spec, sd15.dtype, offline=True)
    assert source == str(mount) and type(net).__name__ == "ControlNetModel"
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "tile-sd15" in listing and "kaggle input" in listing and "Apache-2.0" in listing
