"""Metrics: weight-free ones on real photographs, CLIP ones with a tiny random CLIP."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import metrics as skm

import pegu
from pegu.lab import metrics as M


@pytest.fixture(scope="module")
def clip():
    return M.load_clip("tiny-clip", device="cpu")


def test_psnr_and_ssim_match_scikit_image(astronaut, coffee):
    for photo in (astronaut, coffee):
        h, w = photo.shape[:2]
        small = Image.fromarray(photo).resize((w // 4, h // 4), Image.BICUBIC)
        back = np.asarray(small.resize((w, h), Image.BICUBIC))
        assert M.psnr(photo, back) == pytest.approx(
            skm.peak_signal_noise_ratio(photo, back, data_range=255), abs=1e-9)
        assert M.ssim(photo, back) == pytest.approx(skm.structural_similarity(
            photo, back, channel_axis=2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=255), abs=1e-9)
    assert M.psnr(astronaut, astronaut) == float("inf") and M.ssim(astronaut, astronaut) == 1
    with pytest.raises(ValueError, match="equal shapes"):
        M.psnr(astronaut, astronaut[:10])


def test_blur_lowers_sharpness(astronaut):
    photo = Image.fromarray(astronaut)
    values = [M.sharpness(photo.filter(ImageFilter.GaussianBlur(r))) for r in (0, 1, 2, 4)]
    assert values == sorted(values, reverse=True) and values[0] > 10 * values[-1]


def test_noise_level_tracks_added_noise():
    from skimage import data

    camera = data.camera()
    base = M.noise_level(Image.fromarray(camera))
    rng = np.random.default_rng(0)
    for sigma in (5, 10, 20):
        noisy = np.clip(camera + rng.normal(0, sigma, camera.shape), 0, 255).astype(np.uint8)
        assert M.noise_level(Image.fromarray(noisy)) == pytest.approx(
            np.hypot(base, sigma), rel=0.15)


def test_detail_ratio_reads_waxy_and_sharpened_skin(astronaut):
    face = (180, 80, 270, 175)  # the astronaut's face, hand-marked
    img = Image.fromarray(astronaut)
    assert M.detail_ratio(img, img, face) == pytest.approx(1.0)
    waxy = img.filter(ImageFilter.GaussianBlur(1.5))
    assert M.detail_ratio(img, waxy, face) < 0.3  # pores and freckles gone
    sharp = img.filter(ImageFilter.UnsharpMask(radius=2, percent=200))
    assert M.detail_ratio(img, sharp, face) > 1.5
    with pytest.raises(ValueError, match="one size"):
        M.detail_ratio(img, img.resize((100, 100)))


def test_upscaler_fidelity_table(astronaut):
    up = pegu.load_upscaler("realesr-animevideov3", device="cpu")
    table = M.upscaler_fidelity(Image.fromarray(astronaut[100:228, 150:278]), [up])
    assert list(table.method) == ["bicubic", "lanczos", "realesr-animevideov3"]
    assert (table.psnr_db > 15).all() and (table.ssim > 0.3).all() and (table.ssim <= 1).all()


def test_clip_metrics_plumbing(clip, astronaut, coffee):
    images = [Image.fromarray(astronaut), Image.fromarray(coffee)]
    prompts = ["a photo of a woman", "a photo of a cup of coffee"]
    scores = M.clip_score(clip, images, prompts)
    sims = clip.similarity(images, prompts)
    assert sims.shape == (2, 2) and np.all(np.abs(sims) <= 1 + 1e-6)
    assert scores == pytest.approx([100 * max(sims[0, 0], 0), 100 * max(sims[1, 1], 0)])
    realism = M.clip_realism(clip, images)
    assert all(0 < r < 1 for r in realism)
    share = M.attribute_control(clip, images, prompts)
    assert share == np.mean(np.argmax(sims, axis=1) == [0, 1])
    # the same image under every variant cannot follow more than one of them
    assert M.attribute_control(clip, [images[0]] * 3, ["a", "b", "c"]) <= 1 / 3
    assert M.attribute_variants("a woman with {hair} hair", "hair", ["red", "black"]) == [
        "a woman with red hair", "a woman with black hair"]


def test_efficiency_and_missing_clip():
    assert M.images_per_gpu_hour(7.2) == pytest.approx(500)
    with pytest.raises(ValueError):
        M.images_per_gpu_hour(0)
    with pytest.raises(FileNotFoundError,
                       match="cannot load openai/clip-vit-large-patch14: .*offline"):
        M.load_clip("openai/clip-vit-large-patch14", device="cpu")
