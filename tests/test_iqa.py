"""The field's metrics (the iqa extra): pyiqa's panel, FID and KID — offline, on real
photographs, with pyiqa's weight-free metrics and randomly initialised networks."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import pegu.lab.iqa as iqa
from pegu.cli import main
from pegu.core.errors import WeightsError


def _noisy(img, sigma=60):
    rng = np.random.default_rng(0)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_weight_free_metrics_tell_a_photo_from_its_noisy_copy(astronaut):
    photo = astronaut[:256, 128:384]
    scores = iqa.score([photo, _noisy(photo)], ["piqe", "entropy"], device="cpu")
    assert iqa.lower_better("piqe") and not iqa.lower_better("entropy")
    piqe, entropy = scores["piqe"], scores["entropy"]
    assert piqe[0] < piqe[1], piqe  # PIQE sees the noise as distortion (lower is better)
    assert all(np.isfinite(piqe + entropy))


def test_a_learned_metric_runs_from_its_architecture_offline(astronaut):
    """MUSIQ with random weights: the plumbing a real MUSIQ score takes, without download."""
    s = iqa.score([Image.fromarray(astronaut[:224, :224])], ["musiq"], device="cpu",
                  pretrained=False)["musiq"]
    assert len(s) == 1 and np.isfinite(s[0])


def test_missing_weights_offline_say_where_to_put_them(tmp_path):
    with pytest.raises(WeightsError, match=r"'niqe' could not fetch its weights.*copy its files "
                                           r"into .*pyiqa.*seed_cache"):
        iqa.load_metric("niqe", device="cpu")
    with pytest.raises(ValueError, match="unknown no-reference IQA metric 'psnr'"):
        iqa.check_metrics(["musiq", "psnr"])  # a full-reference metric is no panel metric
    with pytest.raises(WeightsError, match=r"no weights for FID Inception-v3: offline mode is on \(PEGU_OFFLINE\)\. "
                                           "Download https://github.com/toshas/.*to .*metrics/"
                                           "weights-inception"):
        iqa.inception()


def test_seed_cache_from_a_folder_and_from_kaggle(tmp_path, monkeypatch):
    src = tmp_path / "weights"
    src.mkdir()
    (src / "niqe_modelparameters.mat").write_bytes(b"x")
    assert iqa.seed_cache(src) == [iqa.pyiqa_cache() / "niqe_modelparameters.mat"]
    assert iqa.seed_cache(src) == []  # kept, not copied twice
    kaggle = tmp_path / "input" / "datasets" / "me" / "iqa-weights" / "pyiqa"
    kaggle.mkdir(parents=True)
    (kaggle / "musiq_koniq_ckpt.pth").write_bytes(b"y")
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    assert [p.name for p in iqa.seed_cache()] == ["musiq_koniq_ckpt.pth"]
    with pytest.raises(FileNotFoundError):
        iqa.seed_cache(tmp_path / "missing")


def test_fid_and_kid_on_real_photographs(photo_folder, random_inception):
    """Inception-v3 (random weights, torch-fidelity's file format): a set against itself is
    at distance 0, against its noisy copy farther; crops at native resolution counted."""
    photos = sorted(photo_folder.iterdir())
    same = iqa.fid_kid(photo_folder, photo_folder, crop=128, weights=random_inception,
                       device="cpu", kid_subsets=10)
    noisy = [_noisy(np.asarray(Image.open(p).convert("RGB"))) for p in photos]
    far = iqa.fid_kid(noisy, photo_folder, crop=128, weights=random_inception, device="cpu",
                      kid_subsets=10)
    assert same["n_generated"] == same["n_real"] == 4
    assert abs(same["fid"]) < 1e-3 and abs(same["fid_crop"]) < 1e-3
    assert far["fid"] > 100 * max(abs(same["fid"]), 1e-6) and far["fid_crop"] > 1e-3
    assert far["kid_crop"] > same["kid_crop"]
    # astronaut 512² → 16 crops; coffee 400x512 → 12; chelsea 300x451 → 6; rocket 427x512 → 12
    assert same["n_crops_generated"] == same["n_crops_real"] == 46
    with pytest.raises(ValueError, match="smaller than the 1024px crop"):
        iqa.fid_kid(photos, photos, crop=1024, weights=random_inception, device="cpu")
    with pytest.raises(ValueError, match="at least 2 samples"):
        iqa.fid_kid(photos[:1], photos, weights=random_inception, device="cpu")


def test_inception_weights_are_loaded_safely(tmp_path):
    import pickle

    evil = tmp_path / "inception.pth"
    evil.write_bytes(pickle.dumps(print))  # a pickle that would run code
    with pytest.raises(WeightsError, match="does not run code"):
        iqa.inception(weights=evil, device="cpu")


def test_cli_iqa_scores_and_compares(photo_folder, random_inception, tmp_path, capsys):
    gen = tmp_path / "generated"
    gen.mkdir()
    for p in sorted(photo_folder.iterdir())[:3]:
        Image.fromarray(_noisy(np.asarray(Image.open(p).convert("RGB")), 20)).save(gen / p.name)
    code = main(["iqa", str(gen), "--metrics", "piqe,entropy", "--real", str(photo_folder),
                 "--crop", "128", "--inception", str(random_inception), "--device", "cpu",
                 "--csv", str(tmp_path / "scores.csv")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "astronaut.png" in out and "mean piqe" in out and "lower is better for piqe" in out
    assert "FID " in out and "3 images against 4 real" in out and "128px crops" in out
    import pandas as pd

    table = pd.read_csv(tmp_path / "scores.csv", index_col=0)
    assert list(table.columns) == ["piqe", "entropy"] and len(table) == 3
    for argv, message in [
            (["iqa", str(gen), "--metrics", "psnr"], "unknown no-reference IQA metric 'psnr'"),
            (["iqa", str(gen), "--metrics", "piqe", "--crop", "64"], "--crop needs --real"),
            (["iqa", str(gen), "--metrics", "none"], "nothing to measure"),
            (["iqa", str(tmp_path / "nothing")], "no such image or folder")]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_a_sweep_scores_its_images_and_resumes_without_rescoring(tmp_path, monkeypatch):
    from pegu.lab.studies import summarize
    from pegu.lab.grid import load_grid
    from pegu.lab.sweep import sweep

    grid = {"base": {"generate": {"width": 128, "height": 128, "steps": 2}, "target": [256, 256],
                     "upscale": {"model": "realesr-animevideov3"}},
            "models": ["tiny-sd15"], "seeds": [0, 1], "iqa": ["piqe", "entropy"]}
    table = sweep(grid, tmp_path)
    assert table["iqa.piqe"].notna().all() and table["iqa.entropy"].notna().all()
    assert (tmp_path / "iqa.json").exists()
    assert "iqa.piqe" in __import__("pandas").read_csv(tmp_path / "results.csv")
    reading = summarize(table)
    # one model: its scores, read as such, and no "best"
    assert "- piqe (pyiqa): tiny-sd15 " in reading and "iqa.entropy" in reading
    assert "Best piqe" not in reading
    monkeypatch.setattr(iqa, "score", lambda *a, **k: pytest.fail("scored again"))
    again = sweep(grid, tmp_path)
    assert list(again["iqa.piqe"]) == list(table["iqa.piqe"])
    with pytest.raises(ValueError, match="unknown no-reference IQA metric 'nope'"):
        load_grid({**grid, "iqa": ["nope"]})


def test_readings_do_not_overclaim():
    """No interval (and so no winner) from fewer than five runs; equal values are no
    difference; plain numbers; KID's ± only where subsets differ."""
    import pandas as pd

    from pegu.lab.studies import fmt, kid_text, summarize

    assert (fmt(1250.0), fmt(0.04761), fmt(3.14159), fmt(123456.0)) == \
        ("1,250", "0.0476", "3.14", "123,456")
    assert kid_text(0.0476, float("nan")) == "0.0476" and kid_text(0.0476, 0.0012) == \
        "0.0476 ± 0.0012"
    two = pd.DataFrame({"model": ["a", "a", "b", "b"], "status": "ok",
                        "seconds": [10.0, 10.1, 20.0, 20.2],
                        "peak_mib": [1250.0] * 4, "clip_realism": [0.5, 0.501, 0.5, 0.5005]})
    reading = summarize(two)
    assert "**a**" not in reading and "no winner — 2 run(s) per model" in reading
    assert "e+0" not in reading and "1,250" in reading
    six = pd.concat([two] * 3, ignore_index=True)
    reading = summarize(six)
    assert "Fastest: **a**" in reading  # 10 s against 20 s, six runs each: a difference
    assert "Peak memory: no measured difference between" in reading  # equal: none named
