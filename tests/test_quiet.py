"""pegu's output is for people: no third-party warnings, logs or progress bars the user did
not ask for (loading models, refining, a library that cannot reach the Hub)."""
from __future__ import annotations

import logging
import subprocess
import sys

from pegu.core import compat


def test_loading_generating_and_refining_say_nothing_unasked(tmp_path):
    """In a fresh process (third-party modules warn when first imported), with an empty
    cache (the tiny model is built and saved): load, generate, refine and refine with a tile
    ControlNet, progress off: nothing at all on stderr."""
    code = """
import pegu
from pegu import GenerateSettings
g = pegu.load_generator("tiny-sd15", device="cpu", offline=True)
s = GenerateSettings("a portrait", width=64, height=64, steps=1)
image = g.generate(s, progress=False).image
g.refine(image, s, 0.5, steps=1, progress=False)
g.refine(image, s, 0.5, steps=1, progress=False, control=1.0, tiled=True)
print("done")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**__import__("os").environ, "PEGU_CACHE": str(tmp_path)})
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr[-2000:]
    assert r.stderr == "", r.stderr[-2000:]


def test_a_library_that_cannot_reach_the_hub_is_not_heard_while_loading():
    """bitsandbytes logs a warning on AVX-512 BF16 CPUs when it cannot fetch a kernel from
    the Hub (it is imported by diffusers' quantizers while a model loads)."""
    bnb = logging.getLogger("bitsandbytes.backends.cpu.ops")
    before = (logging.getLogger("bitsandbytes").level, bnb.getEffectiveLevel())
    with compat.quiet():
        assert not bnb.isEnabledFor(logging.WARNING)
    # as it was afterwards
    assert (logging.getLogger("bitsandbytes").level, bnb.getEffectiveLevel()) == before


def test_face_restorers_and_community_upscalers_load_and_run_quietly(tmp_path, astronaut):
    """A GFPGAN file and a DAT upscaler (spandrel) loaded and run through pegu in a fresh
    process: nothing on stderr."""
    import torch
    from spandrel.architectures.DAT import DAT

    with compat.quiet():
        from spandrel.architectures.GFPGAN import GFPGAN

        torch.manual_seed(0)
        torch.save(GFPGAN().state_dict(), tmp_path / "gfpgan.pth")
        dat = DAT(upscale=4, img_size=32, embed_dim=24, split_size=[2, 4], depth=[1],
                  num_heads=[2], expansion_factor=2)
        torch.save(dat.state_dict(), tmp_path / "dat.pth")
    code = f"""
import numpy as np
import pegu
from pegu.generate.faces import load_restorer
load_restorer({str(tmp_path / "gfpgan.pth")!r})
up = pegu.load_upscaler({str(tmp_path / "dat.pth")!r}, device="cpu", tile=0)
print(up.upscale(np.zeros((16, 16, 3), np.uint8)).shape)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "(64, 64, 3)", r.stderr[-2000:]
    assert r.stderr == "", r.stderr[-2000:]
