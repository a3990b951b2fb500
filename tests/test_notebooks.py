"""The notebooks, headless: papermill runs each with small parameters, nbval re-runs the
executed copies and checks the cells marked # NBVAL_CHECK_OUTPUT."""
from __future__ import annotations

import ast
import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import papermill as pm
import pytest
from PIL import Image

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
DATA = Path(__file__).parent / "data"
SMALL = {  # tiny-sd15 (random weights) at 128², small targets, real upscaler weights
    "01_model_comparison.ipynb": dict(
        models=["tiny-sd15"], prompts=["portrait of an old man"], seeds=[0, 1], steps=2,
        size=128, target=256, upscaler="realesr-animevideov3", attribute_values=["red", "black"],
        clip_model="tiny-clip", frontier_distill=["", "lcm"],
        frontier_ways=["upscale", "tiled refine"]),
    "02_upscaling_walkthrough.ipynb": dict(
        model="tiny-sd15", steps=2, size=128, target=512, upscaler="realesr-animevideov3",
        photo_size=96, tiles=[64], repeats=2, refine=0.3, clip_model="tiny-clip"),
    "03_explorer.ipynb": dict(model="tiny-sd15", upscaler="realesr-animevideov3", device="cpu"),
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory, photo_folder, random_inception):
    out = tmp_path_factory.mktemp("notebooks")
    done = {}
    # 01 also scores pyiqa's weight-free metrics and FID/KID (Inception with random weights)
    # and pegu's judges (random stand-ins), CMMD, and the sanity check on the real photos
    extra = {"01_model_comparison.ipynb": dict(
        iqa=["piqe", "entropy", "tiny-pickscore", "tiny-vqa"], real_photos=str(photo_folder),
        fid_crop=128, inception=str(random_inception), cmmd_model="tiny",
        check_metrics=["sharpness", "noise", "piqe"], check_upscaler="realesr-animevideov3")}
    # as in Jupyter and on Kaggle: figures shown inline (papermill's kernel would otherwise
    # take whatever MPLBACKEND the test process has)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PEGU_CACHE": str(out / "pegu-cache")}  # the check's verdicts, not the user's
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    for name, params in SMALL.items():
        target = out / name
        pm.execute_notebook(str(NOTEBOOKS / name), str(target),
                            parameters=dict(params, **extra.get(name, {}),
                                            out_dir=str(out / Path(name).stem)),
                            progress_bar=False, cwd=str(out))
        done[name] = target
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return done


def test_every_notebook_is_covered_and_committed_clean():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert set(SMALL) <= set(names)
    for p in NOTEBOOKS.glob("*.ipynb"):
        nb = json.loads(p.read_text())
        assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), p


@pytest.mark.parametrize("name", sorted(SMALL))
def test_papermill_runs_the_notebook(executed, name):
    nb = json.loads(executed[name].read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    out = executed[name].parent / Path(name).stem
    pngs = sorted(p.name for p in out.rglob("*.png"))
    if name.startswith("03"):
        return  # the explorer draws controls; tests/test_widgets.py clicks them
    text = _outputs(nb)
    # every figure shown inline is one the notebook saved (the same size in pixels), 02 shows
    # each it saves; at most one progress bar per cell
    shown = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in
             o.get("data", {})]
    sizes = [tuple(int(v) for v in re.search(r"<Figure size (\d+)x(\d+)", "".join(
        o["data"]["text/plain"])).groups()) for o in shown]
    saved = {p.name: Image.open(p).size for p in out.rglob("*.png")
             if p.parent.name != "images" and p.name != "upscaled.png"}
    assert shown and set(sizes) <= set(saved.values()), (sizes, saved)
    for o in shown:
        inline = Image.open(io.BytesIO(base64.b64decode("".join(o["data"]["image/png"]))))
        assert inline.width >= 300 and inline.height >= 150
    for cell in nb["cells"]:
        bars = [o for o in cell.get("outputs", []) if
                "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(bars) <= 1, "".join(cell["source"])[:200]
    if name.startswith("02"):
        assert len(shown) == len(saved), (sizes, saved)
    if name.startswith("01"):
        assert {"images.png", "stage_costs.png", "quality_vs_time.png",
                "frontier.png"} <= set(pngs)
        # the frontier: 25-step-or-model's and LCM runs, by two ways, read with the frontier
        assert "**Efficiency frontier** (4 variants" in text
        assert "| tiny-sd15 · lcm · tiled refine | 2 |" in text and "On the frontier" in text
        # the reading: two seeds are too few for an interval, and it says so; warm-up-free
        # times, the chance level
        title = "Means over prompts × seeds (no intervals: an interval needs at least 5"
        assert title in text and "| tiny-sd15 | 2 | " in text
        row = text.split(title)[1].split("| tiny-sd15 | 2 | ")[1].split("\n")[0]
        assert "[" not in row and "0." in row, row
        assert "after an untimed warm-up per model and shape" in text and "chance 0.5" in text
        assert "realesr-animevideov3" in text  # the upscaler each row ran
        assert "- piqe (pyiqa): tiny-sd15 " in text and "iqa.entropy" in text
        assert "FID and KID against 4 real photographs" in text and "| tiny-sd15 | 2 | " in \
            text.split("FID and KID against")[1]
        assert "CMMD: MMD of CLIP ViT-L/14-336" in text and "CMMD_crop_unbiased" in text
        # the judges' columns, VQA's attribute control, the frontier read by preference
        assert "Human preference (PickScore) stand-in: tiny-sd15" in text
        assert "Attribute control (VQA questions): tiny-sd15" in text
        assert "iqa.tiny-pickscore (higher is better)" in text
        # the sanity check: noise fails on the real photos, and the tables flag it and
        # sharpness (which prefers the noisy copies), not piqe
        assert "| noise | 0% | 0% | 100% | 0% |" in text and "| iqa.piqe |" in text
        assert "| sharpness | 100% | 100% | 0% |" in text  # fooled by noise: fails
        assert "sharpness ⚠" in text and "iqa.piqe ⚠" not in text
    else:
        assert {"upscaled.png", "side_by_side.png", "tiles.png", "seam.png",
                "upscale_vs_direct.png"} <= set(pngs)
        assert "**Photograph.** astronaut, 96×96 → 384×384" in text  # not the noise
        assert "**Tiles.** 64 px tiles (4 passes)" in text and "**Seam.**" in text
        assert "**Upscale against direct.**" in text and "random test network" in text
        assert "**Tiled refine.**" in text and "**ControlNet tile.**" in text
        assert "**Faces.** 1 face(s) refined" in text and "faces.png" in pngs


def _outputs(nb) -> str:
    """Every text and Markdown output of an executed notebook, and its figures' titles."""
    out = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            for key in ("text/markdown", "text/plain"):
                if key in data:
                    out.append("".join(data[key]))
            if "text" in o:
                out.append("".join(o["text"]))
    return "\n".join(out)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_nbval_validates_the_executed_notebook(executed, name):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--nbval-lax", "--nbval-sanitize-with", str(DATA / "nbval_sanitize.cfg"),
                        str(executed[name])], capture_output=True, text=True,
                       cwd=str(executed[name].parent), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_declared_parameters_are_typed_documented_and_used(path):
    params = pm.inspect_notebook(str(path))
    assert params, f"{path.name} has no parameters cell"
    for name, p in params.items():
        assert p["inferred_type_name"] not in ("None", ""), (name, p)
        assert p["help"].strip(), f"{path.name}: parameter {name} has no help text"
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", [])
    used = set()
    for cell in code[1:]:
        source = "".join(cell["source"])
        used |= {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
        assert "def " not in source and "class " not in source, "notebooks hold no logic"
    assert set(params) <= used, f"{path.name} declares but never uses {set(params) - used}"
