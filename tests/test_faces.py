"""The face detail stage: the real MTCNN detector on real photographs, the paste measured
for seams, the stage through the pipeline, the PNG recipe and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pegu
from pegu.generate import faces as F
from pegu.lab.metrics import seam_ratio
from pegu.core.settings import FaceSettings, GenerateSettings, RunSettings

FACE = (180, 80, 270, 175)  # the astronaut's face, hand-marked (forehead to chin)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_mtcnn_finds_the_astronauts_face_and_nothing_in_a_cup(astronaut, coffee):
    found = F.detect(Image.fromarray(astronaut))
    assert len(found) == 1 and found[0].score > 0.99
    assert _iou(found[0].box, FACE) > 0.6, found[0].box
    assert F.detect(coffee) == []  # a cup of coffee has no face
    assert F.detect(astronaut, min_size=200) == []  # smaller than asked for


def test_the_paste_leaves_no_seam_where_a_hard_paste_does(astronaut):
    """A refine that shifts the crop's colours (as img2img drift does): pasted edge to
    edge, its square shows (seam ratio > 2.5); pegu's colour-matched feathered paste reads
    like the untouched photo (≈ 1)."""
    img = Image.fromarray(astronaut)
    crop = F.crop_box(F.detect(img)[0].box, 0.3, img.size)
    shifted = Image.fromarray(np.clip(np.asarray(img.crop(crop), dtype=int)
                                      + [40, 10, -20], 0, 255).astype(np.uint8))
    hard = img.copy()
    hard.paste(shifted, crop[:2])
    untouched = seam_ratio(img, crop)
    assert seam_ratio(hard, crop) > 2.5 * untouched
    assert seam_ratio(F.paste(img, shifted, crop), crop) <= 1.2 * untouched
    with pytest.raises(ValueError, match="no border"):
        seam_ratio(img, (0, 0, 512, 512))


def test_crop_box_is_a_padded_square_inside_the_image():
    assert F.crop_box((100, 100, 200, 180), 0.5, (512, 512)) == (50, 40, 250, 240)
    assert F.crop_box((0, 0, 100, 100), 0.3, (512, 512)) == (0, 0, 160, 160)  # moved in
    assert F.crop_box((0, 0, 100, 100), 2.0, (300, 200)) == (0, 0, 200, 200)  # cut to fit


@pytest.fixture(scope="module")
def tiny():
    return pegu.load_generator("tiny-sd15", device="cpu")


def test_face_stage_on_the_astronaut_with_the_tiny_model(tiny, astronaut):
    img = Image.fromarray(astronaut)
    out, done = F.refine_faces(img, tiny, GenerateSettings("portrait photo", steps=2),
                               FaceSettings(strength=0.3))
    assert len(done) == 1 and _iou(done[0].box, FACE) > 0.6
    x0, y0, x1, y1 = done[0].crop
    a, b = np.asarray(img).astype(int), np.asarray(out).astype(int)
    outside = np.ones(a.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert (a[outside] == b[outside]).all()  # only the face's square changes
    assert np.abs(a - b)[~outside].mean() > 5  # and it did change (random img2img)
    assert seam_ratio(out, done[0].crop) <= 1.2 * seam_ratio(img, done[0].crop)


def test_pipeline_runs_and_records_the_face_stage(tiny, tmp_path):
    from pegu.pipeline.recipe import read_settings

    settings = RunSettings(GenerateSettings("portrait", width=128, height=128, steps=2),
                           model="tiny-sd15", target=(256, 256),
                           upscale={"model": "realesr-animevideov3"},
                           faces=FaceSettings(strength=0.3, prompt="a face"))
    result = pegu.run(settings, tiny, progress=False)
    stages = [s.stage for s in result.stages]
    assert stages.index("faces") < stages.index("upscale")  # before the final upscale
    assert result.choices.faces == []  # random noise has no face
    path = result.save(tmp_path / "p.png")
    again = read_settings(path)
    assert again.faces == settings.faces
    assert RunSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="faces strength is an img2img strength"):
        FaceSettings(strength=1.5)
    with pytest.raises(ValueError, match="faces at must be one of"):
        FaceSettings(at="middle")


def test_cli_generate_with_faces(tmp_path, capsys):
    from pegu.cli import main

    out = tmp_path / "f.png"
    assert main(["generate", "portrait of a woman", "--model", "tiny-sd15", "--size", "128x128",
                 "--target", "256x256", "--steps", "2", "--upscaler", "realesr-animevideov3",
                 "--faces", "0.3", "--max-faces", "2", "--out", str(out)]) == 0
    from pegu.pipeline.recipe import read_settings

    assert read_settings(out).faces == FaceSettings(strength=0.3, max_faces=2)
    assert main(["info", str(out)]) == 0
    assert "faces" in capsys.readouterr().out
    assert main(["generate", "x", "--model", "tiny-sd15", "--faces", "1.5"]) == 2
    assert "faces strength" in capsys.readouterr().err
    assert main(["generate", "x", "--model", "tiny-sd15", "--face-prompt", "a face"]) == 2
    assert "go with --faces" in capsys.readouterr().err


# ---- restoration (GFPGAN, CodeFormer), randomly initialised: the plumbing ----

@pytest.fixture(scope="module")
def restorers():
    import torch

    from pegu.core import compat

    with compat.quiet():  # their modules warn when first imported (torch.jit.script)
        from spandrel.architectures.GFPGAN import GFPGAN
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    return {"GFPGAN": F.restorer_from(GFPGAN().state_dict(), "random GFPGAN"),
            "CodeFormer": F.restorer_from(CodeFormer().state_dict(), "random CodeFormer")}


@pytest.mark.parametrize("name", ["GFPGAN", "CodeFormer"])
def test_restorers_align_restore_and_blend_back(name, restorers, astronaut):
    img = Image.fromarray(astronaut)
    face = F.detect(img)[0]
    assert len(face.landmarks) == 5
    left_eye, right_eye = face.landmarks[:2]
    assert left_eye[0] < right_eye[0] and FACE[0] < left_eye[0] < FACE[2]  # the eyes
    out = F.restore(img, face, restorers[name], fidelity=0.5)
    a, b = np.asarray(img).astype(int), np.asarray(out).astype(int)
    changed = np.abs(a - b).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.any() and 100 < xs.mean() < 350 and 30 < ys.mean() < 250  # the face area
    assert not changed[:, :100].any() and not changed[300:].any()  # nothing far away
    if name == "CodeFormer":  # its fidelity weight reaches the network
        other = F.restore(img, face, restorers[name], fidelity=1.0)
        assert np.abs(np.asarray(other).astype(int) - b).max() > 0


def test_restorer_names_sources_and_refusals(tmp_path):
    from pegu.core.registry import FACE_RESTORERS
    from pegu.core.errors import WeightsError

    for spec in FACE_RESTORERS.values():
        assert spec.url.startswith("https://github.com/") and len(spec.sha256) == 64
    assert "non-commercial" in FACE_RESTORERS["CodeFormer"].licence
    with pytest.raises(WeightsError, match="offline mode.*GFPGANv1.4.pth"):
        F.load_restorer("GFPGANv1.4")
    with pytest.raises(ValueError, match="unknown face restorer 'gfp'"):
        F.load_restorer("gfp")
    with pytest.raises(ValueError, match="fidelity is CodeFormer's weight"):
        FaceSettings(restore="CodeFormer", fidelity=2)


def test_a_missing_restorer_is_refused_before_any_model_loads(monkeypatch):
    import pegu.pipeline.models
    from pegu.core.errors import WeightsError

    monkeypatch.setattr(pegu.pipeline.models, "load_generator", lambda *a, **k: pytest.fail("loaded"))
    settings = RunSettings(GenerateSettings("x"), model="tiny-sd15", target=(512, 512),
                           faces=FaceSettings(restore="GFPGANv1.4"))
    with pytest.raises(WeightsError, match="offline mode is on. Download https://github.com/"
                                           "TencentARC"):
        pegu.run(settings)
    with pytest.raises(ValueError, match="unknown face restorer 'nope.pth'"):
        pegu.run(RunSettings(GenerateSettings("x"), model="tiny-sd15",
                             faces=FaceSettings(restore="nope.pth")))
