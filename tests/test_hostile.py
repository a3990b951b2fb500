"""The hostile battery (issue 30), from the outside: hostile files, hostile text, full disks
and two writers. Each case runs the `pegu` command as a user would and checks that it
exits 2 with one line naming the file and what to do (or runs, where running is right),
with no traceback, no partial file and earlier files unchanged; and that no pickled code
ever runs. The loaders are fuzzed with truncated, empty, pickled, junk and wrong-family
files of every kind pegu reads."""
from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from pegu.cli import main

PEGU = str(Path(sys.executable).parent / "pegu")
TINY = ["--model", "tiny-sd15", "--steps", "2", "--seed", "1", "--target", "64x64",
        "--upscaler", "realesr-animevideov3"]


class Evil:
    """A pickle that, loaded by an unsafe reader, creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def refused(argv, capsys, *, code: int = 2, match: str | None = None) -> str:
    """Run ``pegu ARGV`` in this process: it exits ``code`` with one line (no traceback)."""
    assert main(argv) == code
    err = "\n".join(line for line in capsys.readouterr().err.splitlines()
                    if "steps:" not in line and line.strip())  # the tiny model's bar
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"pegu {argv[0]}: error: "), err
    if match:
        assert re.search(match, err), err
    return err


def png(path, **text) -> Path:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def tree(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder`` (hidden ones included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _tensors(path: Path, tensors: dict) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


# ---- 1. every file pegu reads: one checked loader per kind ----

def _bad_weights(folder: Path, stem: str, good: bytes, marker: Path) -> list[Path]:
    """Empty, truncated, pickled-code, junk and junk-header versions of a weights file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(stem)
    made = {f"{stem}_empty.safetensors": b"", f"{stem}_emptypt.pt": b"",
            f"{stem}_trunc.safetensors": good[: len(good) // 2],
            f"{stem}_evil.pt": pickle.dumps(Evil(marker)),
            f"{stem}_evilst.safetensors": pickle.dumps(Evil(marker)),
            f"{stem}_junk.bin": bytes(rng.getrandbits(8) for _ in range(300)),
            f"{stem}_header.safetensors": (40).to_bytes(8, "little") + b'{"a": {"dtype": 1}}'}
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return [folder / n for n in made]


def test_embeddings_and_loras_damaged_pickled_or_of_the_other_family(tmp_path, monkeypatch,
                                                                     capsys):
    import torch

    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path / "net"))
    marker = tmp_path / "PWNED"
    good = (tmp_path / "g.safetensors")
    _tensors(good, {"emb_params": torch.zeros(1, 32)})
    embeddings = _bad_weights(tmp_path / "net" / "embeddings", "emb", good.read_bytes(), marker)
    # an SDXL embedding (clip_l, clip_g) in an SD 1.5 prompt
    _tensors(tmp_path / "net" / "embeddings" / "xlemb.safetensors",
             {"clip_l": torch.zeros(1, 32), "clip_g": torch.zeros(1, 32)})
    embeddings.append(tmp_path / "net" / "embeddings" / "xlemb.safetensors")
    lora = _tensors(tmp_path / "l.safetensors", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)})
    loras = _bad_weights(tmp_path / "net" / "lora", "lora", lora.read_bytes(), marker)
    # an SDXL-sized LoRA (2048-wide text projection) on the tiny SD 1.5
    _tensors(tmp_path / "net" / "lora" / "xllora.safetensors", {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            torch.zeros(4, 2048),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
            torch.zeros(64, 4)})
    loras.append(tmp_path / "net" / "lora" / "xllora.safetensors")
    out = tmp_path / "out"
    for f in embeddings:
        refused(["generate", f"a face, {f.stem}", *TINY, "--out", str(out / "a.png")], capsys,
                match=re.escape(str(f)))
    for f in loras:
        refused(["generate", f"a face <lora:{f.stem}:0.8>", *TINY, "--out",
                 str(out / "a.png")], capsys, match=re.escape(str(f)))
    assert not marker.exists(), "a pickle ran"
    assert not out.exists() or not any(out.iterdir())


def test_checkpoints_upscalers_controlnets_vaes_and_configs(tmp_path, capsys):
    """--model a damaged or non-checkpoint file or folder, --upscaler a damaged file,
    --controlnet a folder of the other family or a damaged one, a VAE folder of junk."""
    import torch

    from pegu.generate.tiny import build_tiny_controlnet

    marker = tmp_path / "PWNED"
    ckpt = _tensors(tmp_path / "c.safetensors", {"model.diffusion_model.x": torch.zeros(8)})
    models = _bad_weights(tmp_path / "models", "model", ckpt.read_bytes(), marker)
    models.append(_tensors(tmp_path / "models" / "alora.safetensors",
                           {"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}))
    for m in models:
        refused(["generate", "a face", "--model", str(m), "--steps", "2", "--out",
                 str(tmp_path / "o.png")], capsys, match=re.escape(str(m)))
    # a diffusers folder whose model_index.json is junk, and one missing its weights
    for name, index in (("junk", "{not json"), ("empty", json.dumps({
            "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model_index.json").write_text(index)
        refused(["generate", "a face", "--model", str(folder), "--steps", "2", "--out",
                 str(tmp_path / "o.png")], capsys, match=re.escape(str(folder)))
    image = tmp_path / "in.png"
    Image.new("RGB", (16, 16)).save(image)
    for w in _bad_weights(tmp_path / "up", "up", ckpt.read_bytes(), marker):
        refused(["upscale", str(image), "--model", str(w), "--out", str(tmp_path / "u")],
                capsys, match=re.escape(str(w)))
    # ControlNet folders: of the other family (SDXL for SD 1.5), and damaged
    xl = tmp_path / "tile-sdxl"
    build_tiny_controlnet("sdxl").save_pretrained(xl)
    refused(["generate", "a face", *TINY[:-2], "--refine", "0.3", "--refine-control",
             "--controlnet", str(xl), "--out", str(tmp_path / "o.png")], capsys,
            match="is for SDXL models.*this model is SD 1.5")
    broken = tmp_path / "tile-broken"
    build_tiny_controlnet("sd15").save_pretrained(broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    refused(["generate", "a face", *TINY[:-2], "--refine", "0.3", "--refine-control",
             "--controlnet", str(broken), "--out", str(tmp_path / "o.png")], capsys,
            match=re.escape(str(broken)))
    assert not marker.exists(), "a pickle ran"
    assert not (tmp_path / "o.png").exists()
    assert not (tmp_path / "u").exists() or not any((tmp_path / "u").iterdir())


def test_a_cache_path_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("PEGU_CACHE", str(tmp_path / "cache" / "sub"))
    refused(["generate", "a face", *TINY, "--out", str(tmp_path / "o.png")], capsys,
            match="cache.*is a file; point PEGU_CACHE at a folder")


# ---- 2. text: recipes and grids, bounded and finite ----

def test_hostile_recipes(tmp_path, capsys):
    from pegu.core.settings import GenerateSettings, RunSettings

    good = RunSettings(GenerateSettings("a portrait"), model="tiny-sd15").to_dict()
    cases = {
        "hires_inf": dict(parameters="a face\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, "
                          "Size: 64x64, Model: tiny-sd15, Denoising strength: 0.3, "
                          "Hires upscale: inf"),
        "target_inf": dict(pegu=json.dumps({"settings": {**good, "target": [float("inf"),
                                                                            128]}})),
        "target_frac": dict(pegu=json.dumps({"settings": {**good, "target": [64.5, 64]}})),
        "stages_text": dict(pegu=json.dumps({"settings": good, "stages": "abc"})),
        "stages_junk": dict(pegu=json.dumps({"settings": good, "stages": [{"stage": 1}]})),
        "versions_list": dict(pegu=json.dumps({"settings": good, "versions": [1, 2]})),
    }
    for name, chunks in cases.items():
        path = png(tmp_path / f"{name}.png", **chunks)
        refused(["info", str(path)] if "stages" in name or "versions" in name else
                ["generate", "--from", str(path), "--out", str(tmp_path / "o.png")], capsys,
                match=re.escape(str(path)) if "inf" not in name else "finite|whole")
    assert not (tmp_path / "o.png").exists()


def test_hostile_images(tmp_path, capsys):
    """A decompression bomb's header (40000² claimed in 200 kB), a text chunk beyond PIL's
    limit, truncated and empty files: refused by every command that reads images."""
    import zlib

    Image.new("1", (40000, 40000)).save(tmp_path / "bomb.png")
    png(tmp_path / "bigtext.png", parameters="x" * 2_000_000)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "x" * 2_000_000, zip=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "ztext.png", pnginfo=info)
    assert len(zlib.compress(b"x" * 2_000_000)) < 10_000
    good = png(tmp_path / "good.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[:40])
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("bomb", "ztext", "trunc", "empty"):
        path = tmp_path / f"{name}.png"
        for argv in (["info", str(path)], ["generate", "--from", str(path), "--out",
                                           str(tmp_path / "o.png")],
                     ["upscale", str(path), "--out", str(tmp_path / "u")]):
            refused(argv, capsys, match=re.escape(str(path)))
    assert main(["info", str(tmp_path / "bigtext.png")]) == 0  # 2 MB uncompressed: read
    capsys.readouterr()


@pytest.mark.parametrize("line", ["a " * 50_000, "word" * 25_000, "Steps: 2, " * 10_000,
                                  'A: "' + "x, " * 30_000, ("ab-c/d " * 1000 + "\t") * 20])
def test_a_100_kb_parameters_line_reads_in_linear_time(tmp_path, line, monkeypatch):
    """A1111's pattern with findall is quadratic on a long line without colons (minutes on
    100 kB); pegu's reader finds the same fields in one pass. Counted, not timed: every
    pattern the reader runs is wrapped to count its calls and the characters its matches
    span, which must stay within a few times the line's length (a findall would not even
    be reachable through the wrappers)."""
    import pegu.pipeline.recipe as recipe
    from pegu.pipeline.recipe import _PARAM, _params, parse_parameters

    seen = {"calls": 0, "chars": 0}

    class Counted:
        def __init__(self, pattern):
            self.pattern = pattern

        def match(self, text, pos=0):
            m = self.pattern.match(text, pos)
            seen["calls"] += 1
            seen["chars"] += m.end() - pos if m else 0
            return m

    for name in ("_PARAM", "_SPACE", "_KEY_RUN", "_WORD"):
        monkeypatch.setattr(recipe, name, Counted(getattr(recipe, name)))
    assert recipe.parse_parameters("a\n" + line)["Prompt"]
    # read twice (is it a parameter line? its fields), each field spanned by two patterns
    assert seen["calls"] <= 8 * len(line) and seen["chars"] <= 8 * len(line), seen
    monkeypatch.undo()
    path = png(tmp_path / "long.png", parameters="a portrait\n" + line)
    r = subprocess.run([PEGU, "info", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and len(r.stdout) > 90_000, r.stderr
    assert parse_parameters("a\n" + line)["Prompt"]
    rng = random.Random(len(line))  # the same matches as A1111's findall on short lines
    for _ in range(3000):
        text = "".join(rng.choice('ab :,"\\-/\t1é') for _ in range(rng.randint(0, 30)))
        assert _params(text) == _PARAM.findall(text), text


LAUGHS = "".join(f"  - &{c} [" + ",".join([f"*{p}"] * 9 if p else ["1"] * 9) + "]\n"
                 for p, c in zip([None, *"abcdefg"], "abcdefgh"))


@pytest.mark.parametrize("text, match", [
    ("base: {model: tiny-sd15}\nprompts: [x]\nseeds:\n" + LAUGHS, "expands to more than"),
    ("base:\n  model: tiny-sd15\n  generate:\n    negative_prompt:\n" +
     LAUGHS.replace("  -", "      -") + "prompts: [x]\n", "expands to more than"),
    ("base: &a {model: tiny-sd15, x: *a}\nprompts: [x]\n", "recursive"),
    ("prompts: [x]\nseeds: [1]\nseeds: [2, 3]\n", "'seeds' is given twice"),
    ("base: {model: tiny-sd15, model: tiny-sdxl}\nprompts: [x]\n", "'model' is given twice"),
    ("prompts: [x]\nguidance: [.nan]\n", r"guidance\[0\] is nan"),
    ("prompts: [x]\nrefine: [.inf]\n", r"refine\[0\] is inf"),
    ("prompts: [2024-01-01]\n", "is a date"),
    ("prompts: " + "[" * 3000 + "]" * 3000 + "\n", "too deeply"),
    ("base: {model: tiny-sd15, target: [64, 64], generate: {steps: 2}}\nprompts: [x]\n"
     "seeds: [-5]\n", "no run of the grid has valid settings: seed must be"),
])
def test_hostile_grids_are_refused_at_once(tmp_path, text, match, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    refused(["sweep", "--grid", str(grid), "--out", str(tmp_path / "o"), "--no-clip"], capsys,
            match=match)
    assert not (tmp_path / "o" / "rows").exists()


def test_a_grid_file_over_the_size_limit(tmp_path, capsys):
    from pegu.lab.grid import MAX_GRID_BYTES

    grid = tmp_path / "grid.yaml"
    grid.write_text("prompts: [" + ", ".join(["x"] * (MAX_GRID_BYTES // 3 + 1)) + "]\n")
    refused(["sweep", "--grid", str(grid), "--out", str(tmp_path / "o")], capsys,
            match="a grid file is at most")


# ---- 3. sizes: the estimate before a tiled refine ----

def test_a_tiled_refine_beyond_memory_is_refused_with_the_largest_size(tmp_path, monkeypatch,
                                                                      capsys):
    from pegu.core import device

    monkeypatch.setattr(device, "available_memory", lambda: 2 * 2**30)  # a 2 GiB machine
    err = refused(["generate", "a face", *TINY[:-4], "--target", "8192x8192", "--refine", "0.3",
                   "--refine-tiled", "--out", str(tmp_path / "o.png")], capsys,
                  match=r"tiled refine to 8192x8192 needs about \d+\.\d GiB of RAM")
    side = int(re.search(r"largest square target that fits is about (\d+)x", err).group(1))
    assert 1024 <= side < 8192 and side % 8 == 0
    # the plain upscale of that size needs less and is not refused by the estimate
    from pegu.core.device import check_output_memory

    check_output_memory((side, side), "cpu", tiled_refine=True)
    with pytest.raises(MemoryError):
        check_output_memory((side + 256, side + 256), "cpu", tiled_refine=True)


# ---- 4. output faults ----

def test_output_faults_one_line_nothing_partial_earlier_files_intact(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "earlier.png"
    earlier.write_bytes(b"earlier image")
    # an existing folder named *.png is a folder: the image goes inside it
    (out / "dir.png").mkdir()
    assert main(["generate", "a face", *TINY, "--out", str(out / "dir.png")]) == 0
    assert len(list((out / "dir.png").glob("pegu_*.png"))) == 1
    # a file where the output folder should be
    refused(["generate", "a face", *TINY, "--out", str(earlier / "a.png")], capsys,
            match=f"{re.escape(str(earlier))}.*(is a file|a file is in the way)")
    refused(["upscale", str(earlier), "--out", str(earlier)], capsys)
    # a file-size limit (a full disk behaves alike) during the write, in a real process
    r = subprocess.run(["bash", "-c", f"ulimit -f 100; exec {PEGU} generate 'a face' "
                        f"{' '.join(TINY[:-4])} --target 1024x1024 --upscaler "
                        f"realesr-animevideov3 --out {out / 'big.png'}"],
                       capture_output=True, text=True)
    err = [line for line in r.stderr.splitlines() if line.startswith("pegu")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(err) == 1 and "cannot write" in err[0] and "file-size limit" in err[0], err
    assert not (out / "big.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["dir.png", "earlier.png"]  # no temp file
    assert earlier.read_bytes() == b"earlier image"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    refused(["generate", "a face", *TINY, "--out", str(ro / "a.png")], capsys,
            match="permission denied")


# ---- 5. one writer per out folder ----

def test_a_second_sweep_on_a_busy_folder_is_refused_and_a_dead_ones_lock_taken_over(
        tmp_path, capsys):
    """Event-driven: the first sweep's first run line, then its death by SIGKILL."""
    import yaml

    base = {"model": "tiny-sd15", "target": [64, 64], "generate": {"steps": 1},
            "upscale": {"model": "realesr-animevideov3"}}
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(yaml.safe_dump({"base": base, "prompts": ["x"],
                                     "seeds": list(range(500))}))
    second.write_text(yaml.safe_dump({"base": base, "prompts": ["y"], "seeds": [7, 8]}))
    out = tmp_path / "o"
    sweeping = subprocess.Popen([PEGU, "sweep", "--grid", str(first), "--out", str(out),
                                 "--no-clip"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    try:
        if not any(re.search(r"\[0/1\] run \d+ ", line) for line in sweeping.stderr):
            pytest.fail(f"the first sweep ended before its first run ({sweeping.wait()})")
        rows = tree(out / "rows")
        refused(["sweep", "--grid", str(second), "--out", str(out), "--no-clip"], capsys,
                match=rf"is being written by pegu sweep \(process {sweeping.pid} ")
        refused(["sweep", "--grid", str(second), "--out", str(out), "--no-clip",
                 "--shard", "0/2"], capsys, match="is being written by")
        assert set(rows) <= set(tree(out / "rows"))  # nothing of the first sweep was lost
    finally:
        sweeping.send_signal(signal.SIGKILL)
        sweeping.wait()
    # the holder is dead: its lock is taken over, and the table is exactly this grid's
    assert main(["sweep", "--grid", str(second), "--out", str(out), "--no-clip"]) == 0
    import pandas as pd

    table = pd.read_csv(out / "results.csv")
    assert sorted(table["generate.seed"]) == [7, 8] and set(table["generate.prompt"]) == {"y"}
    assert list((out / "earlier" / "rows").glob("*.json"))  # the first grid's rows, aside


def test_shards_of_one_grid_share_a_folder_and_others_are_refused(tmp_path):
    """The lock's rule (flock conflicts between open files, so one process shows it): shards
    of one grid share the folder; shards of another grid, or a whole sweep, are refused while
    they write; a whole sweep excludes shards; the first shard after them records its grid."""
    from contextlib import ExitStack

    from pegu.lab.lock import FolderBusy, writer_lock

    with ExitStack() as held:
        held.enter_context(writer_lock(tmp_path, shared="grid-a"))
        held.enter_context(writer_lock(tmp_path, shared="grid-a"))
        with pytest.raises(FolderBusy, match="being written by shards of another grid"):
            held.enter_context(writer_lock(tmp_path, shared="grid-b"))
        with pytest.raises(FolderBusy, match=r"being written by sweep shards \(--shard\)"):
            held.enter_context(writer_lock(tmp_path))
    with writer_lock(tmp_path, "pegu sweep"):
        with pytest.raises(FolderBusy, match=rf"by pegu sweep \(process {os.getpid()} "):
            with writer_lock(tmp_path, shared="grid-a"):
                pass
    with writer_lock(tmp_path, shared="grid-b"):  # the folder is free again: b's now
        with pytest.raises(FolderBusy, match="shards of another grid"):
            with writer_lock(tmp_path, shared="grid-a"):
                pass


# ---- 6. faces: tiny and faceless images have none ----

def test_tiny_and_faceless_images_have_no_faces(tmp_path, capsys):
    import numpy as np

    from pegu.generate.faces import detect

    for shape in [(16, 16, 3), (8, 200, 3), (64, 64, 3), (300, 300, 3)]:
        for value in (0, 255):
            assert detect(np.full(shape, value, np.uint8)) == []
    out = tmp_path / "f.png"
    assert main(["generate", "a face", *TINY[:-6], "--target", "16x16", "--faces",
                 "--faces-at", "target", "--out", str(out)]) == 0
    assert Image.open(out).size == (16, 16)


# ---- the fuzz: every loader, generated damage (seeded) ----

def test_every_weights_loader_fuzzed(tmp_path):
    """read_weights, tensor_names and load_state_dict on generated damage: truncations of a
    real file at random points, random bytes, pickles of code, junk headers."""
    import torch

    from pegu.core.errors import PeguError
    from pegu.sources import load_state_dict, read_weights, tensor_names

    marker = tmp_path / "PWNED"
    real_st = _tensors(tmp_path / "real.safetensors", {"w": torch.randn(16, 16)}).read_bytes()
    buf = io.BytesIO()
    torch.save({"w": torch.randn(16, 16)}, buf)
    real_pt = buf.getvalue()
    rng = random.Random(30)
    for i in range(60):
        kind = i % 5
        if kind == 0:
            data, suffix = real_st[: rng.randint(0, len(real_st) - 1)], ".safetensors"
        elif kind == 1:
            data, suffix = real_pt[: rng.randint(0, len(real_pt) - 1)], ".pt"
        elif kind == 2:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 500)))
            suffix = rng.choice([".pt", ".bin", ".safetensors", ".ckpt"])
        elif kind == 3:
            data, suffix = pickle.dumps(Evil(marker)), rng.choice([".pt", ".safetensors"])
        else:
            header = json.dumps({"w": {"dtype": rng.choice(["F32", "X", 3]),
                                       "shape": [rng.randint(-2, 9)],
                                       "data_offsets": [0, rng.randint(-5, 99)]}}).encode()
            data, suffix = len(header).to_bytes(8, "little") + header + b"\0" * 16, \
                ".safetensors"
        path = tmp_path / f"f{i}{suffix}"
        path.write_bytes(data)
        for load in (read_weights, tensor_names, load_state_dict):
            try:
                load(path)
            except PeguError as e:
                assert str(path) in str(e)
    assert not marker.exists(), "a pickle ran"
