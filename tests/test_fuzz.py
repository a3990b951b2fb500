"""Bad input a user can give ends in pegu's own errors, never a stray exception: generated
malformed PNG chunks, A1111 parameters, grids and weights files (seeded: a failure
reproduces). pegu's boundary errors are ValueError (settings, images, metadata, grids),
FileNotFoundError and WeightsError (weights); the CLI turns them into one line and exit 2."""
from __future__ import annotations

import io
import json
import random
import struct

import pytest
from PIL import Image, PngImagePlugin

from pegu.cli import main
from pegu.pipeline.recipe import read_settings
from pegu.core.settings import GenerateSettings, RunSettings
from pegu.lab.grid import AXES, load_grid
from pegu.core.errors import WeightsError

SEED = 2026
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # A1111 fields pegu ignores
TEXT = "ab{}[]:,\"\\ 0x-.é\n"
KEYS = ["settings", "generate", "prompt", "seed", "steps", "target", "upscale", "model",
        "mode", "refine", "width", "fit", "tile", "x"]


def junk(rng: random.Random, depth: int = 0):
    """A random JSON-able value, nested up to three levels."""
    kinds = [lambda: rng.randint(-10**12, 10**12), lambda: rng.uniform(-1e6, 1e6),
             lambda: "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 12))),
             lambda: None, lambda: rng.choice([True, False]), lambda: float("nan")]
    if depth < 3:
        kinds += [lambda: [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))],
                  lambda: {rng.choice(KEYS): junk(rng, depth + 1)
                           for _ in range(rng.randint(0, 4))}]
    return rng.choice(kinds)()


def mutated(rng: random.Random, d):
    """``d`` with one randomly chosen leaf (or branch) replaced by junk."""
    d = json.loads(json.dumps(d))
    node, key = d, None
    while True:
        key = rng.choice(list(node))
        if isinstance(node[key], dict) and node[key] and rng.random() < 0.6:
            node = node[key]
            continue
        node[key] = junk(rng)
        return d


def png(path, **text):
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_malformed_pegu_chunks_are_pegu_errors(tmp_path, capsys):
    rng = random.Random(SEED)
    valid = RunSettings(GenerateSettings("a portrait")).to_dict()
    for i in range(150):
        if i % 3 == 0:
            chunk = json.dumps(junk(rng))
        elif i % 3 == 1:
            chunk = json.dumps({"settings": mutated(rng, valid)})
        else:
            chunk = "".join(rng.choice(TEXT) for _ in range(rng.randint(0, 40)))
        path = png(tmp_path / f"{i}.png", pegu=chunk)
        try:
            assert isinstance(read_settings(path), RunSettings)
        except ValueError as e:
            assert str(path) in str(e) or "pegu" in str(e), e
        assert main(["info", str(path)]) in (0, 2)
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err


def test_malformed_a1111_parameters_are_pegu_errors(tmp_path):
    rng = random.Random(SEED + 1)
    fields = ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Denoising strength",
              "Hires upscale", "Hires resize", "Hires steps", "Schedule type", "Emphasis",
              "Hires upscaler", "Clip skip"]
    values = ["big", "-1", "0", "1e309", "nan", "3x", "x3", "512x", "DPM++ 9M", "", ",", ":",
              "99999999999999999999", "1.5.2", "\"quoted, comma\"", "512x512"]
    for i in range(150):
        pairs = [f"{rng.choice(fields)}: {rng.choice(values)}" for _ in range(rng.randint(1, 6))]
        text = "a portrait\nNegative prompt: blur\n" + ", ".join(pairs)
        path = png(tmp_path / f"{i}.png", parameters=text)
        try:
            assert isinstance(read_settings(path), RunSettings)
        except ValueError:
            pass


def test_malformed_grids_are_pegu_errors(tmp_path):
    rng = random.Random(SEED + 2)
    keys = list(AXES) + ["base", "attributes", "timing", "seed", ""]
    for i in range(300):
        if i % 4 == 3:  # not a mapping, or not YAML at all
            path = tmp_path / f"{i}.yaml"
            path.write_text("".join(rng.choice(TEXT + "\t- &*!|>%@`") for _ in range(30)))
            grid = path
        else:
            grid = {rng.choice(keys): junk(rng) for _ in range(rng.randint(1, 4))}
        try:
            assert isinstance(load_grid(grid), list)
        except ValueError:
            pass


def _weights_files(tmp_path, rng):
    """Files a user might pass as upscaler weights that hold no usable network."""
    import torch

    from pegu.upscale.networks import network as _network

    real = io.BytesIO()
    torch.save(_network("SRVGGNetCompact", dict(num_in_ch=3, num_out_ch=3, num_feat=8,
                                                num_conv=2, upscale=4)).state_dict(), real)
    real = real.getvalue()
    made = []
    for i in range(40):
        suffix = rng.choice([".pth", ".safetensors", ".bin", ".ckpt", ".pt"])
        kind = i % 5
        if kind == 0:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        elif kind == 1:
            data = real[: rng.randint(0, len(real) - 1)]  # truncated
        elif kind == 2:  # a safetensors header of junk
            header = json.dumps(junk(rng)).encode()
            data = struct.pack("<Q", len(header)) + header + b"\0" * rng.randint(0, 64)
        elif kind == 3:  # a state dict of the wrong shapes / keys
            buf = io.BytesIO()
            torch.save({str(junk(rng)): torch.zeros(rng.randint(1, 4))
                        for _ in range(rng.randint(0, 3))}, buf)
            data = buf.getvalue()
        else:  # a pickle under a safetensors name
            data, suffix = real, ".safetensors"
        path = tmp_path / f"w{i}{suffix}"
        path.write_bytes(data)
        made.append(path)
    return made


def test_malformed_weights_files_are_pegu_errors(tmp_path, capsys):
    from pegu.upscale import load_upscaler

    rng = random.Random(SEED + 3)
    image = png(tmp_path / "in.png")
    for path in _weights_files(tmp_path, rng):
        with pytest.raises((WeightsError, ValueError)):
            load_upscaler(path, device="cpu")
    for path in _weights_files(tmp_path, rng)[:10]:
        assert main(["upscale", str(image), "--model", str(path), "--out",
                     str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pegu upscale: error:") and "Traceback" not in err, err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
