"""The efficiency levers (issue 27) on the tiny models, on the CPU: few-step distillation
LoRAs as their cards prescribe them, DeepCache, token merging, a compiled UNet, and the whole
CLI path of a distilled run to 2048² re-run from its PNG."""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pegu.core.errors import GpuUnsupported
from pegu.core.registry import DISTILLATIONS, distill_spec
from pegu.core.settings import SCHEDULERS, GenerateSettings, RunSettings
from pegu.generate import distill as dist
from pegu.generate import load_generator
from pegu.generate.speedups import attention_downsample
from pegu.sources import cached_file

PROMPT = "a photo of a woman with curly red hair"
SIZE = dict(width=128, height=128)


@pytest.fixture(scope="module")
def gens(tmp_path_factory):
    import os

    os.environ["PEGU_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return {f: load_generator(f"tiny-{f}", device="cpu") for f in ("sd15", "sdxl")}


@pytest.fixture(autouse=True)
def _shared_cache(gens, monkeypatch):
    import os

    # the module's cache (the tiny models, the tiny LoRAs), not conftest's per-test one
    monkeypatch.setenv("PEGU_CACHE", os.environ["PEGU_CACHE"])


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


class Calls:
    """Counts a module's forward calls while the block runs."""

    def __init__(self, module):
        self.module, self.n = module, 0

    def __enter__(self):
        self.hook = self.module.register_forward_pre_hook(lambda m, a: self._one())
        return self

    def _one(self):
        self.n += 1

    def __exit__(self, *exc):
        self.hook.remove()


def test_every_card_is_consistent():
    for d in DISTILLATIONS.values():
        assert d.scheduler in d.schedulers and set(d.schedulers) <= set(SCHEDULERS)
        assert d.step_range[0] <= d.steps <= d.step_range[1]
        assert d.guidance_range[0] <= d.guidance <= d.guidance_range[1]
        assert d.licence and d.source and d.families
        for family, w in d.files:
            assert w.url.startswith("https://huggingface.co/") and w.url.endswith(w.filename)
            assert w.folder == f"distill/{d.name}-{family}"  # same-named files kept apart
        if d.timesteps:
            assert len(d.timesteps) == d.steps
    assert distill_spec("LCM-LoRA").name == "lcm" and distill_spec("dmd2").name == "dmd2-4"
    with pytest.raises(ValueError, match="Did you mean 'lightning-4'"):
        distill_spec("lightnin-4")
    with pytest.raises(ValueError, match="unknown distillation"):
        GenerateSettings(PROMPT, distill="turbo")


# the card's sampler class and the timesteps it samples at 1000 training steps
CASES = [("lcm", "sd15", "LCMScheduler", [999, 759, 499, 259]),
         ("lcm", "sdxl", "LCMScheduler", [999, 759, 499, 259]),
         ("hyper-8", "sd15", "DDIMScheduler", list(range(999, 0, -125))),
         ("hyper-8-cfg", "sdxl", "DDIMScheduler", list(range(999, 0, -125))),
         ("hyper-12-cfg", "sd15", "DDIMScheduler", None),
         ("dmd2-4", "sdxl", "LCMScheduler", [999, 749, 499, 249]),
         ("lightning-4", "sdxl", "EulerDiscreteScheduler", [999, 749, 499, 249]),
         ("lightning-8", "sdxl", "EulerDiscreteScheduler", list(range(999, 0, -125)))]


@pytest.mark.parametrize("name,family,scheduler,timesteps", CASES)
def test_a_distillation_runs_as_its_card_says(gens, name, family, scheduler, timesteps):
    g = gens[family]
    d = distill_spec(name)
    base = g.generate(GenerateSettings(PROMPT, seed=3, **SIZE), progress=False)
    with Calls(g.pipe.unet) as calls:
        r = g.generate(GenerateSettings(PROMPT, seed=3, distill=name, **SIZE), progress=False)
    s = r.settings
    assert (s.scheduler, s.steps, s.guidance) == (d.scheduler, d.steps, d.guidance)
    assert type(g.pipe.scheduler).__name__ == scheduler
    if timesteps:
        assert [int(t) for t in g.pipe.scheduler.timesteps] == timesteps
    assert calls.n == d.steps  # CFG or not, one batched UNet call a step
    assert s.negative_prompt == ("" if not d.cfg else s.negative_prompt)
    assert not np.array_equal(pixels(r.image), pixels(base.image))  # the LoRA acts
    assert g.distill_sources[name] == str(cached_file(dist.tiny_file(d, family)))
    # unloading restores the model bit for bit
    again = g.generate(GenerateSettings(PROMPT, seed=3, **SIZE), progress=False)
    assert np.array_equal(pixels(again.image), pixels(base.image))


def test_peft_and_kohya_layouts_load_to_the_same_lora(gens, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from pegu.generate.tiny import build_tiny

    unet = build_tiny("sd15").unet  # without the adapters the other tests loaded
    images = {}
    for layout in ("peft", "kohya"):
        monkeypatch.setenv("PEGU_CACHE", str(tmp_path / layout))
        state = dist.tiny_lora(unet, layout, seed=5)
        keys = list(state)
        if layout == "peft":
            assert all(re.match(r"unet\..*\.lora_[AB]\.weight$", k) for k in keys)
        else:
            assert all(re.match(r"lora_unet_\w+\.(lora_down\.weight|lora_up\.weight|alpha)$",
                                k) for k in keys)
        path = cached_file(dist.tiny_file(distill_spec("lcm"), "sd15"))
        path.parent.mkdir(parents=True)
        save_file(state, str(path))
        g = load_generator("tiny-sd15", device="cpu")
        images[layout] = pixels(g.generate(GenerateSettings(PROMPT, distill="lcm", **SIZE),
                                           progress=False).image)
    assert np.abs(images["peft"] - images["kohya"]).max() <= 1


def test_the_other_familys_file_of_the_same_name_is_skipped(gens, tmp_path, monkeypatch):
    """Both LCM-LoRAs are pytorch_lora_weights.safetensors: on Kaggle the SDXL one attached
    is not taken for SD 1.5's."""
    from safetensors.torch import save_file

    from pegu.sources import fetch_file

    folder = tmp_path / "input" / "lcm-lora-sdxl"
    folder.mkdir(parents=True)
    from pegu.generate.tiny import build_tiny

    save_file(dist.tiny_lora(build_tiny("sdxl").unet, "kohya", seed=1),
              str(folder / "pytorch_lora_weights.safetensors"))
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    w = distill_spec("lcm").file("sd15")
    unet = gens["sd15"].pipe.unet
    with pytest.warns(UserWarning, match="text width is 64; this model's is 32"):
        with pytest.raises(Exception, match="no weights for lcm: offline mode is on"):
            fetch_file(w, offline=True, build=lambda s, where: dist.check_fits(s, unet, where))
    w = distill_spec("lcm").file("sdxl")
    state, where = fetch_file(w, offline=True, build=lambda s, where: s)
    assert where == str(folder / "pytorch_lora_weights.safetensors")


def test_what_a_card_rules_out_is_corrected_with_a_note_or_refused(gens):
    g = gens["sdxl"]
    with pytest.warns(UserWarning) as caught:
        r = g.generate(GenerateSettings(PROMPT, distill="lightning-4", steps=25, guidance=7,
                                        scheduler="DPM++ 2M Karras", negative_prompt="blurry",
                                        **SIZE), progress=False)
    notes = " | ".join(str(w.message) for w in caught)
    assert (r.settings.scheduler, r.settings.steps, r.settings.guidance) == \
        ("Euler SGM Uniform", 4, 0.0)
    assert "distilled for 4 steps, not 25: using 4" in notes
    assert "not DPM++ 2M Karras: using Euler SGM Uniform" in notes
    assert "guidance 0-1, not 7: using 0" in notes and "negative prompt is not used" in notes
    assert r.warnings and "using 4" in " ".join(r.warnings)
    with pytest.raises(ValueError, match="dmd2-4 exists for sdxl models, not sd15; for sd15 "
                                         "use one of lcm, hyper-8"):
        gens["sd15"].generate(GenerateSettings(PROMPT, distill="dmd2-4", **SIZE))
    # a CFG-preserving one keeps guidance and the model's negative prompt
    s = gens["sd15"].resolve(GenerateSettings(PROMPT, distill="hyper-8-cfg"))
    assert s.guidance == 5.0 and s.negative_prompt == ""  # tiny-sd15 recommends none
    with pytest.warns(UserWarning, match="made for distilled models"):
        gens["sd15"].generate(GenerateSettings(PROMPT, scheduler="LCM", steps=2, **SIZE),
                              progress=False)


def test_deepcache_runs_the_deep_unet_every_nth_step_only(gens):
    g = gens["sd15"]
    s = GenerateSettings(PROMPT, steps=7, seed=2, **SIZE)
    base = g.generate(s, progress=False)
    # a skipped block is still called (its output comes from the cache): count its parts
    with Calls(g.pipe.unet) as unet, Calls(g.pipe.unet.mid_block.resnets[0]) as mid, \
            Calls(g.pipe.unet.down_blocks[0].resnets[0]) as shallow:
        r = g.generate(GenerateSettings(PROMPT, steps=7, seed=2, deepcache=3, **SIZE),
                       progress=False)
    assert unet.n == 7 and shallow.n == 7  # every step still runs the shallow branch
    assert mid.n == math.ceil(7 / 3) == 3  # the deep part at steps 0, 3, 6 only
    assert (g.last_deepcache.full_calls, g.last_deepcache.partial_calls) == (3, 4)
    diff = np.abs(pixels(r.image) - pixels(base.image))
    assert 0 < diff.mean() < 40  # close to the full computation, not equal
    # off again: nothing of it is left on the modules
    assert "forward" not in vars(g.pipe.unet) and "forward" not in vars(g.pipe.unet.mid_block)
    assert np.array_equal(pixels(g.generate(s, progress=False).image), pixels(base.image))


def test_deepcache_keeps_a_cache_per_tile(gens):
    g = gens["sd15"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8))
    s = GenerateSettings(PROMPT, steps=4, deepcache=2, **SIZE)
    whole = g.refine(image, s, strength=0.99, progress=False).image
    full, partial = g.last_deepcache.full_calls, g.last_deepcache.partial_calls
    # one tile covering the image is exactly the untiled refine, DeepCache included
    one = g.refine(image, s, strength=0.99, progress=False, tiled=True).image
    assert np.array_equal(pixels(whole), pixels(one))
    # 768²: 96² latents in 64² tiles (the tiny model's native 512 / 8), several a step,
    # each with its own cache: the same share of calls is partial as untiled
    big = image.resize((768, 768))
    g.refine(big, s, strength=0.99, progress=False, tiled=True)
    c = g.last_deepcache
    tiles = c.full_calls // full
    assert tiles == 4 and c.partial_calls == tiles * partial and len(c._caches) == 0
    # ToMe too merges within each tile: half of each tile's first-attention tokens
    block = next(m for m in g.pipe.unet.modules()
                 if type(m).__name__ == "BasicTransformerBlock")
    tokens = {None: [], 0.5: []}
    for ratio in tokens:
        hook = block.attn1.register_forward_pre_hook(
            lambda m, a, r=ratio: tokens[r].append(a[0].shape[1]))
        try:
            g.refine(big, GenerateSettings(PROMPT, steps=2, tome=ratio), strength=0.99,
                     progress=False, tiled=True)
        finally:
            hook.remove()
    (n,) = set(tokens[None])
    assert n < (768 // 8 // 2) ** 2 and set(tokens[0.5]) == {n - n // 2}


def test_tome_merges_tokens_keeps_shapes_and_repeats(gens):
    g = gens["sdxl"]
    assert attention_downsample(g.pipe.unet) == 2  # SDXL: no attention in its first block
    block = next(m for m in g.pipe.unet.modules()
                 if type(m).__name__ == "BasicTransformerBlock")
    tokens = []
    hook = block.attn1.register_forward_pre_hook(lambda m, a: tokens.append(a[0].shape[1]))
    try:
        base = g.generate(GenerateSettings(PROMPT, steps=2, **SIZE), progress=False)
        n = tokens[-1]
        first = g.generate(GenerateSettings(PROMPT, steps=2, tome=0.5, **SIZE), progress=False)
        merged = tokens[-1]
        second = g.generate(GenerateSettings(PROMPT, steps=2, tome=0.5, **SIZE), progress=False)
    finally:
        hook.remove()
    assert n == (128 // 8 // 2) ** 2 and merged == n - n // 2  # half the tokens merged
    assert first.image.size == base.image.size
    assert np.array_equal(pixels(first.image), pixels(second.image))  # seeded: repeats
    assert not np.array_equal(pixels(first.image), pixels(base.image))
    assert type(block).__name__ == "BasicTransformerBlock"  # unpatched after the call
    again = g.generate(GenerateSettings(PROMPT, steps=2, **SIZE), progress=False)
    assert np.array_equal(pixels(again.image), pixels(base.image))


def test_compiled_unet_is_built_once_per_mode_and_refused_where_it_cannot_help(
        gens, monkeypatch):
    from pegu.core import device as device_module

    g = gens["sd15"]
    built = []

    def fake_compile(model, mode, dynamic):
        built.append(mode)
        return model  # the same maths; compiling itself is torch's

    monkeypatch.setattr(torch, "compile", fake_compile)
    unet = g.pipe.unet
    for _ in range(2):
        g.generate(GenerateSettings(PROMPT, steps=1, compile="reduce-overhead", **SIZE),
                   progress=False)
    assert built == ["reduce-overhead"] and g.pipe.unet is unet
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (6, 0))  # P100
    with pytest.raises(GpuUnsupported, match="compute capability 7.0 or newer.*6.0"):
        device_module.compiled(unet, cuda, "reduce-overhead", refuse=True)
    with warnings.catch_warnings(record=True) as caught:  # the upscaler's way: it warns
        warnings.simplefilter("always")
        assert device_module.compiled(unet, cuda) is unet
    assert "running uncompiled" in str(caught[0].message)
    with pytest.raises(ValueError, match="compile must be one of"):
        GenerateSettings(PROMPT, compile="fast")


def test_speed_settings_are_checked_and_a_sweep_axis():
    from pegu.lab.grid import load_grid

    with pytest.raises(ValueError, match="deepcache is a cache interval"):
        GenerateSettings(PROMPT, deepcache=1)
    with pytest.raises(ValueError, match="tome is a token merging ratio"):
        GenerateSettings(PROMPT, tome=1.5)
    runs = load_grid({"base": {"model": "tiny-sd15", "generate": {"prompt": PROMPT}},
                      "distill": [None, "lcm"], "deepcache": [None, 3], "tome": [None, 0.5]})
    assert len(runs) == 8
    assert {(r["generate"].get("distill"), r["generate"].get("deepcache"),
             r["generate"].get("tome")) for r in runs} == \
        {(d, c, t) for d in (None, "lcm") for c in (None, 3) for t in (None, 0.5)}
    assert RunSettings.from_dict(runs[-1]).generate.tome == 0.5


def test_cli_distilled_run_to_2048_and_its_rerun_from_the_png(tmp_path):
    from pegu.cli import main
    from pegu.pipeline.recipe import read_settings

    out, again = tmp_path / "lcm.png", tmp_path / "again.png"
    assert main(["generate", PROMPT, "--model", "tiny-sd15", "--distill", "lcm",
                 "--deepcache", "2", "--tome", "0.5", "--upscaler", "realesr-animevideov3",
                 "--out", str(out)]) == 0
    assert Image.open(out).size == (2048, 2048)
    s = read_settings(out).generate
    assert (s.distill, s.scheduler, s.steps, s.guidance, s.deepcache, s.tome) == \
        ("lcm", "LCM", 4, 1.0, 2, 0.5)
    assert "Distill: lcm" in Image.open(out).info["parameters"]
    assert main(["generate", "--from", str(out), "--out", str(again)]) == 0
    assert np.array_equal(pixels(Image.open(out)), pixels(Image.open(again)))
    assert main(["generate", PROMPT, "--model", "tiny-sd15", "--distill", "lightning-4",
                 "--out", str(tmp_path / "x.png")]) == 2  # an SDXL LoRA: refused


def test_a_distillation_works_with_user_loras_and_the_controlled_refine(tmp_path, monkeypatch):
    """<lora:...> tags and the distillation are both active, and both act; the refine with a
    tile ControlNet runs on the distilled model with the card's sampler."""
    from safetensors.torch import save_file

    from pegu.core.settings import UpscaleSettings
    from pegu.generate.tiny import build_tiny
    from pegu.pipeline import run

    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path))
    (tmp_path / "lora").mkdir()
    save_file(dist.tiny_lora(build_tiny("sd15").unet, "peft", seed=9),
              str(tmp_path / "lora" / "mine.safetensors"))
    g = load_generator("tiny-sd15", device="cpu")

    def image(prompt, distill):
        r = run(RunSettings(GenerateSettings(prompt, distill=distill, **SIZE),
                            model="tiny-sd15", target=(256, 256), refine=0.5,
                            refine_control=1.0,
                            upscale=UpscaleSettings("realesr-animevideov3")),
                g, progress=False)
        assert r.status == "ok" and "refine" in " ".join(s.stage for s in r.stages)
        return r

    both = image("a photo <lora:mine:0.8>", "lcm")
    assert both.choices.loras == {"mine": 0.8} and both.settings.generate.distill == "lcm"
    assert type(g._img2img_pipe(g._controlnets["tiny-tile-sd15"]).scheduler).__name__ == \
        "LCMScheduler"
    only_lora = image("a photo <lora:mine:0.8>", None)
    only_distill = image("a photo", "lcm")
    for other in (only_lora, only_distill):
        assert not np.array_equal(pixels(both.image), pixels(other.image))


def test_the_frontier_names_the_variants_no_other_beats_on_both():
    import pandas as pd

    from pegu.lab.frontier import frontier, frontier_grid, frontier_reading

    rng = np.random.default_rng(0)
    rows = []
    # (distill, way, seconds, quality): lcm fast and as good; 25 steps slower, better with
    # tiled refine; hyper-8-cfg direct: slower than tiled refine and worse (dominated)
    for distill, way_, sec, q in (("lcm", "upscale", 2.0, 0.60), (None, "upscale", 8.0, 0.61),
                                  (None, "tiled refine", 12.0, 0.80),
                                  ("hyper-8-cfg", "direct", 20.0, 0.70)):
        for seed in range(6):
            rows.append({"status": "ok", "model": "rv6", "generate.distill": distill,
                         "generate.steps": 25 if distill is None else 4,
                         "generate.deepcache": None, "generate.tome": None,
                         "mode": "direct" if way_ == "direct" else "upscale",
                         "refine_tiled": way_ == "tiled refine",
                         "refine": 0.3 if way_ == "tiled refine" else None,
                         "seconds": sec + rng.normal(0, 0.1),
                         "clip_realism": q + rng.normal(0, 0.01)})
    rows.append({"status": "error", "model": "rv6", "seconds": 0.1})
    f = frontier(pd.DataFrame(rows))
    assert list(f["variant"]) == ["rv6 · lcm · upscale", "rv6 · 25 steps · upscale",
                                  "rv6 · 25 steps · tiled refine",
                                  "rv6 · hyper-8-cfg · direct"]
    assert list(f["pareto"]) == [True, True, True, False] and set(f["n"]) == {6}
    assert (f["clip_realism.lo"] < f["clip_realism"]).all()  # 6 runs: intervals
    text = frontier_reading(pd.DataFrame(rows))
    assert "| rv6 · hyper-8-cfg · direct | 6 |" in text and "on the frontier" in text
    assert "the best is measurably better" in text
    g = frontier_grid({"models": ["rv6"]}, distill=["", "lcm"], tome=[0, 0.5],
                      ways=["upscale", "direct"])
    assert g["distill"] == [None, "lcm"] and g["tome"] == [None, 0.5] and \
        g["deepcache"] == [None] and g["timing"]["warmup"]


def test_refused_before_a_model_loads_and_read_from_a1111_text(tmp_path, monkeypatch):
    from pegu.cli import main
    from pegu.core.settings import sampler_name
    from pegu.pipeline.plan import precheck
    from pegu.pipeline.recipe import a1111_parameters, read_settings

    def settings(model, distill):
        return RunSettings(GenerateSettings(PROMPT, distill=distill), model=model)

    with pytest.raises(ValueError, match="lightning-4 exists for sdxl models, not sd15"):
        precheck(settings("realistic-vision-v6", "lightning-4"))
    monkeypatch.setenv("PEGU_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="lcm's LoRA for sdxl is not on this machine "
                                                ".*lcm-lora-sdxl/resolve/main/pytorch_lora"):
        precheck(settings("sdxl-base", "lcm"), offline=True)
    precheck(settings("tiny-sdxl", "lcm"), offline=True)  # built in code
    assert main(["generate", "x", "--model", "sdxl-base", "--distill", "dmd2",
                 "--offline", "--out", str(tmp_path / "x.png")]) == 2
    # A1111's names: Sampler LCM; Euler with Schedule type SGM Uniform (Lightning's)
    assert sampler_name("LCM") == ("LCM", None)
    assert sampler_name("Euler", "SGM Uniform") == ("Euler", "SGM Uniform")
    # an image with A1111's text only (pegu's JSON chunk stripped) keeps its speed settings
    from PIL.PngImagePlugin import PngInfo

    s = RunSettings(GenerateSettings(PROMPT, steps=4, guidance=1.0, scheduler="LCM", seed=3,
                                     width=512, height=512, distill="lcm", deepcache=3,
                                     tome=0.5), model="tiny-sd15")
    info = PngInfo()
    info.add_itxt("parameters", a1111_parameters(s))
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    g = read_settings(tmp_path / "a1111.png").generate
    assert (g.distill, g.deepcache, g.tome, g.scheduler, g.steps) == ("lcm", 3, 0.5, "LCM", 4)
