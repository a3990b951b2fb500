"""The explorer's callbacks, driven headless: set values, click Generate and Save."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

import pegu
from pegu.lab.widgets import Explorer


def make(tmp_path) -> Explorer:
    ex = Explorer(model="tiny-sd15", upscaler="realesr-animevideov3", device="cpu",
                  out_dir=str(tmp_path / "saved"))
    ex.prompt.value = "portrait of a smiling old man"
    ex.steps_model.value = False
    ex.steps.value = 2
    ex.target.value = "1024x1024"
    return ex


def test_generate_and_save(tmp_path):
    ex = make(tmp_path)
    ex.seed.value = 3
    ex.generate_button.click()
    assert "ok: 1024x1024" in ex.status.value, ex.status.value
    shown = Image.open(io.BytesIO(ex.image.value))
    assert shown.size == (1024, 1024)
    assert "generate" in ex.table.value and "upscale" in ex.table.value
    assert not ex.save_button.disabled
    ex.save_button.click()
    saved = sorted((tmp_path / "saved").glob("*.png"))
    assert [p.name for p in saved] == ["explorer_tiny-sd15_3_1024x1024.png"]
    assert pegu.read_settings(saved[0]) == ex.result.settings
    assert np.array_equal(np.asarray(Image.open(saved[0])), np.asarray(shown))
    ex.save_button.click()  # a second save never overwrites
    assert len(list((tmp_path / "saved").glob("*.png"))) == 2


def test_models_stay_loaded_and_errors_stay_in_the_interface(tmp_path):
    ex = make(tmp_path)
    ex.generate()
    gen = ex.models.generator
    ex.refine.value = 0.3
    ex.control.value = 0.8  # the tile ControlNet conditions the refine
    ex.faces.value = 0.35  # the face stage runs and is recorded (noise: no face found)
    ex.generate()
    assert ex.models.generator is gen and ex.result.intermediate is not None
    assert ex.result.settings.faces.strength == 0.35 and "faces" in ex.table.value
    assert ex.result.settings.refine_control == 0.8
    assert ex.result.settings.controlnet == "tiny-tile-sd15"
    before = ex.result
    ex.model.value = "epicrealsim"
    ex.generate_button.click()  # no exception escapes
    assert "BadInput" in ex.status.value and "Did you mean" in ex.status.value
    assert ex.result is before and not ex.generate_button.disabled
    ex.model.value = "tiny-sd15"
    ex.size.value = "768x512"
    ex.target.value = "2048x2048"
    ex.generate()
    assert "fit=" in ex.status.value  # 3:2 base, square target: says how to fix it


def test_random_seed_and_nothing_to_save(tmp_path):
    ex = make(tmp_path)
    ex.save()
    assert "nothing to save" in ex.status.value
    seeds = {ex.random_seed() for _ in range(5)}
    assert len(seeds) > 1 and ex.seed.value in seeds


def test_auto_upscaler_is_the_default(tmp_path):
    """The explorer starts on "auto" and resolves it as the pipeline does (x2 to the target
    offline without x2plus weights: x4plus); the full auto path runs in test_pipeline."""
    from pegu.pipeline import resolve_upscaler

    ex = Explorer(model="tiny-sd15", device="cpu", out_dir=str(tmp_path / "saved"))
    assert ex.upscaler.value == "auto" and ex.settings().upscale.model == "auto"
    ex.size.value, ex.target.value = "512x512", "1024x1024"
    chosen, why = resolve_upscaler(ex.settings(), pegu.load_generator("tiny-sd15"))
    assert chosen.upscale.model == "RealESRGAN_x4plus" and "x2plus would do" in why


def test_fit_model_recommendations_and_refusal_before_loading(tmp_path, monkeypatch):
    import pegu.pipeline.models
    from pegu.core.registry import generator_spec

    ex = Explorer(model="tiny-sd15", upscaler="realesr-animevideov3", device="cpu",
                  out_dir=str(tmp_path / "saved"))
    spec = generator_spec("tiny-sd15")
    # "(model's)" ticked: the slider shows the recommendation and the pipeline gets None
    assert ex.steps.disabled and ex.steps.value == spec.steps
    assert ex.guidance.value == spec.guidance
    assert ex.settings().generate.steps is None and ex.settings().generate.guidance is None
    ex.guidance_model.value = False
    assert not ex.guidance.disabled
    ex.guidance.value = 3.5
    assert ex.settings().generate.guidance == 3.5
    ex.model.value = "realistic-vision-v6"  # the slider that follows the model moves
    assert ex.steps.value == generator_spec("realistic-vision-v6").steps
    assert ex.guidance.value == 3.5
    ex.model.value = "tiny-sd15"
    # a 3:2 size for a square target without fit: refused, and no model loads
    loads = []
    monkeypatch.setattr(pegu.pipeline.models, "load_generator",
                        lambda *a, **k: loads.append(a))
    ex.size.value, ex.target.value = "768x512", "1024x1024"
    ex.generate()
    assert "--fit cover" in ex.status.value and loads == [] and ex.result is None
    monkeypatch.undo()
    ex.fit.value = "cover"
    ex.steps_model.value = False
    ex.steps.value = 2
    ex.generate()
    assert "ok: 1024x1024" in ex.status.value, ex.status.value
    assert ex.result.settings.fit == "cover" and ex.result.base.size == (768, 512)
