"""The judges (pegu.lab.judges) against their reference implementations on the same inputs,
with random-weight stand-ins of the same classes (no weights reach this machine):

* HPSv2.1 against hpsv2 1.2.0's own vendored open_clip (its CLIP class, its validation
  transform, its tokenizer, ``img_score.score``'s formula): equal to 1e-6;
* PickScore against its model card's code (transformers' CLIPProcessor and CLIPModel);
* the VQA yes-probability against ``BlipForQuestionAnswering.generate``'s first step;
* CMMD against google-research/cmmd's embedding (``CLIPVisionModelWithProjection``, its
  resize, no crop) and its ``distance.mmd``, written here as the reference writes them.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pegu.core.errors import BadInput, WeightsUnavailable
from pegu.lab import judges as J

PROMPTS = ["portrait photo of a woman with red hair", "a photograph of a cup of coffee",
           "a man in a suit"]


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()),  # 600x400
            Image.fromarray(data.camera()).convert("RGB")]


@pytest.fixture(scope="module")
def hps_reference(tmp_path_factory):
    """hpsv2's vendored open_clip, imported from a copy (its wheel lacks the BPE vocabulary
    its tokenizer opens at import: open_clip's own file, the same, is put beside it)."""
    import open_clip

    spec = importlib.util.find_spec("hpsv2")
    if spec is None:
        pytest.skip("hpsv2 (the reference) is not installed: make setup installs it --no-deps")
    src = Path(spec.submodule_search_locations[0]) / "src" / "open_clip"
    root = tmp_path_factory.mktemp("hpsv2") / "hps_open_clip"
    shutil.copytree(src, root)
    shutil.copy(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", root)
    s = importlib.util.spec_from_file_location("hps_open_clip", root / "__init__.py",
                                               submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(s)
    sys.modules["hps_open_clip"] = module
    s.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:Importing from timm.models.layers:FutureWarning")
def test_hpsv2_matches_the_hpsv2_package(hps_reference, photos):
    from hps_open_clip.model import CLIP
    from hps_open_clip.transform import image_transform

    torch.manual_seed(1)
    ref = CLIP(**J.TINY_HPS, output_dict=True).eval()
    ours = J.load_hps("tiny", device="cpu")
    ours.model.load_state_dict(ref.state_dict(), strict=True)  # the checkpoint's keys fit
    # create_model_and_transforms(..., light_augmentation=True) -> this preprocess_val
    preprocess = image_transform(224, is_train=False, resize_longest_max=True)
    tokenizer = hps_reference.get_tokenizer("ViT-H-14")
    expected = []
    for im, prompt in zip(photos, PROMPTS):
        with torch.no_grad():  # img_score.score, without CUDA autocast
            out = ref(preprocess(im)[None], tokenizer([prompt]))
            expected.append(float(torch.diagonal(out["image_features"]
                                                 @ out["text_features"].T)[0]))
        assert torch.equal(preprocess(im), ours.preprocess(im))
    got = ours.score(photos, PROMPTS)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert len(set(np.round(got, 6))) == 3  # the three differ: not a constant


@pytest.fixture(scope="module")
def imagereward_reference():
    """image-reward 1.5's BLIP modules (vit.py, med.py), imported by path: the package's
    __init__ pulls in its training code (datasets, diffusers pins). Four shims, for this
    test only: fairscale's checkpoint wrapper (activation checkpointing, unused at
    inference) and three helpers transformers 5 removed, restored as transformers 4 wrote
    them."""
    import types

    spec = importlib.util.find_spec("ImageReward")
    if spec is None:
        pytest.skip("image-reward (the reference) is not installed: make setup installs it "
                    "--no-deps")
    root = Path(spec.submodule_search_locations[0]) / "models" / "BLIP"
    saved = {n: sys.modules.get(n) for n in ("fairscale", "fairscale.nn",
                                             "fairscale.nn.checkpoint",
                                             "fairscale.nn.checkpoint.checkpoint_activations")}
    for n in saved:
        sys.modules[n] = types.ModuleType(n)
    sys.modules["fairscale.nn.checkpoint.checkpoint_activations"].checkpoint_wrapper = \
        lambda module, **kw: module
    import transformers.modeling_utils as mu

    patched = {n: getattr(mu, n, None) for n in ("apply_chunking_to_forward",
                                                   "find_pruneable_heads_and_indices",
                                                   "prune_linear_layer")}
    mu.apply_chunking_to_forward = lambda forward, chunk_size, dim, *inputs: forward(*inputs)
    mu.find_pruneable_heads_and_indices = mu.prune_linear_layer = None  # pruning: unused
    modules = {}
    try:
        for name in ("vit", "med"):
            s = importlib.util.spec_from_file_location(f"imagereward_{name}", root / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(s)
            s.loader.exec_module(modules[name])
    finally:
        for n, m in saved.items():
            sys.modules.pop(n) if m is None else sys.modules.__setitem__(n, m)
        for n, f in patched.items():
            delattr(mu, n) if f is None else setattr(mu, n, f)
    med = modules["med"]

    def invert_attention_mask(self, mask):  # transformers 4's ModuleUtilsMixin
        ext = mask[:, None, None, :] if mask.dim() == 2 else mask[:, None, :, :]
        return (1.0 - ext.to(self.dtype)) * torch.finfo(self.dtype).min

    med.BertPreTrainedModel.init_weights = lambda self: self.apply(self._init_weights)
    med.BertModel.invert_attention_mask = invert_attention_mask
    med.BertModel.get_head_mask = lambda self, mask, n: [None] * n
    return modules


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_imagereward_matches_the_image_reward_package(imagereward_reference, photos, tmp_path):
    from transformers import BertConfig
    from torchvision.transforms import (CenterCrop, Compose, InterpolationMode, Normalize,
                                        Resize, ToTensor)

    torch.manual_seed(2)
    vis, txt = J.TINY_IMAGEREWARD_VISION, J.TINY_IMAGEREWARD_TEXT
    vit = imagereward_reference["vit"].VisionTransformer(
        img_size=224, patch_size=16, embed_dim=vis["hidden_size"],
        depth=vis["num_hidden_layers"], num_heads=vis["num_attention_heads"]).eval()
    cfg = BertConfig(vocab_size=txt["vocab_size"], hidden_size=txt["hidden_size"],
                     num_hidden_layers=txt["num_hidden_layers"],
                     num_attention_heads=txt["num_attention_heads"],
                     intermediate_size=txt["intermediate_size"],
                     max_position_embeddings=txt["max_position_embeddings"],
                     layer_norm_eps=1e-12, add_cross_attention=True)
    cfg.encoder_width = vis["hidden_size"]  # blip_pretrain.py sets it so
    bert = imagereward_reference["med"].BertModel(config=cfg, add_pooling_layer=False).eval()
    mlp = J.reward_head(txt["hidden_size"]).eval()  # ImageReward.py's MLP.layers
    for p in mlp.parameters():  # its init (std 1/(width+1)) gives near-zero rewards: widen
        torch.nn.init.normal_(p, std=0.5)
    state = {**{f"blip.visual_encoder.{k}": v for k, v in vit.state_dict().items()},
             **{f"blip.text_encoder.{k}": v for k, v in bert.state_dict().items()},
             **{f"mlp.layers.{k}": v for k, v in mlp.state_dict().items()}}
    torch.save(state, tmp_path / "ImageReward.pt")
    ours = J.load_imagereward(tmp_path / "ImageReward.pt", device="cpu", tiny=True)
    preprocess = Compose([Resize(224, interpolation=InterpolationMode.BICUBIC), CenterCrop(224),
                          lambda im: im.convert("RGB"), ToTensor(),
                          Normalize((0.48145466, 0.4578275, 0.40821073),
                                    (0.26862954, 0.26130258, 0.27577711))])
    expected = []
    for im, prompt in zip(photos, PROMPTS):  # ImageReward.score
        text = ours.tokenizer(prompt, padding="max_length", truncation=True, max_length=35,
                              return_tensors="pt")
        with torch.no_grad():
            emb = vit(preprocess(im)[None])
            out = bert(text.input_ids, attention_mask=text.attention_mask,
                       encoder_hidden_states=emb,
                       encoder_attention_mask=torch.ones(emb.shape[:-1], dtype=torch.long),
                       return_dict=True)
            r = mlp(out.last_hidden_state[:, 0, :].float())
        expected.append(float((r - 0.16717362830052426) / 1.0333394966054072))
    got = ours.score(photos, PROMPTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(set(np.round(got, 5))) == 3


def test_pickscore_matches_its_model_card(photos):
    from transformers import CLIPProcessor

    ours = J.load_pickscore("tiny", device="cpu")
    model = ours.clip.model
    processor = CLIPProcessor(image_processor=ours.clip.image_processor,
                              tokenizer=ours.clip.tokenizer)
    for prompt in PROMPTS:
        # the model card's calc_probs, with its arguments
        image_inputs = processor(images=photos, padding=True, truncation=True, max_length=77,
                                 return_tensors="pt")
        text_inputs = processor(text=prompt, padding=True, truncation=True, max_length=77,
                                return_tensors="pt")
        with torch.no_grad():
            image_embs = _features(model.get_image_features(**image_inputs))
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = _features(model.get_text_features(**text_inputs))
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
        np.testing.assert_allclose(ours.score(photos, prompt), scores.numpy(), atol=1e-5)


def _features(out):
    """transformers 5 returns an output object where 4 returned the tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def test_vqa_yes_probability_is_generates_first_step(photos):
    vqa = J.load_vqa("tiny", device="cpu")
    yes, no = (vqa.tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no"))
    for im, prompt in zip(photos, PROMPTS):
        question = J.QUESTION.format(prompt)
        px = vqa.image_processor(images=[im], return_tensors="pt").pixel_values
        q = vqa.tokenizer([question], return_tensors="pt")
        with torch.no_grad():
            out = vqa.model.generate(pixel_values=px, input_ids=q.input_ids,
                                     attention_mask=q.attention_mask, max_new_tokens=1,
                                     output_logits=True, return_dict_in_generate=True)
        p = torch.softmax(out.logits[0][0].float(), -1)
        np.testing.assert_allclose(vqa.yes_no(im, question), (p[yes], p[no]), atol=1e-6)
    scores = vqa.score(photos, PROMPTS)
    assert all(0 < s < 1 for s in scores)


def _reference_mmd(x, y):
    """google-research/cmmd distance.mmd, in torch as its PyTorch port writes it."""
    sigma, scale = 10, 1000
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    x_sq, y_sq = torch.diag(x @ x.T), torch.diag(y @ y.T)
    gamma = 1 / (2 * sigma ** 2)
    k_xx = torch.mean(torch.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = torch.mean(torch.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = torch.mean(torch.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return float(scale * (k_xx + k_yy - 2 * k_xy))


def test_cmmd_matches_the_reference(photos, tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    ours = J.load_embedder("tiny", device="cpu")
    ours.clip.model.save_pretrained(tmp_path / "clip")
    ours.clip.image_processor.save_pretrained(tmp_path / "clip")
    # embedding.ClipEmbeddingModel, as the reference loads and calls it
    model = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "clip").eval()
    processor = CLIPImageProcessor.from_pretrained(tmp_path / "clip")
    size = processor.crop_size["height"]
    ref = []
    for im in photos:
        w, h = im.size  # io_util: the centre square, PIL bicubic to the input size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        a = np.asarray(im.crop(box).resize((size, size), Image.BICUBIC)).astype(np.float32) / 255
        t = torch.nn.functional.interpolate(torch.from_numpy(a[None].transpose(0, 3, 1, 2)),
                                            size=(size, size), mode="bicubic")
        inputs = processor(images=t.permute(0, 2, 3, 1).numpy(), do_normalize=True,
                           do_center_crop=False, do_resize=False, do_rescale=False,
                           return_tensors="pt")
        with torch.no_grad():
            e = model(**inputs).image_embeds
        ref.append((e / torch.linalg.norm(e, axis=-1, keepdims=True)).numpy())
    ref = np.concatenate(ref)
    got = ours.embed(photos)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    x, y = got[:2], got[1:]
    assert J.mmd(x, y) == pytest.approx(_reference_mmd(x, y), rel=1e-5)
    assert J.mmd(x, x) == 0 and J.mmd(x, y) > 0


def test_unbiased_mmd_leaves_out_each_sets_own_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 8)), rng.normal(size=(5, 8)) + 0.5
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / 200)

    kxx = np.mean([k(a, b) for i, a in enumerate(x) for j, b in enumerate(x) if i != j])
    kyy = np.mean([k(a, b) for i, a in enumerate(y) for j, b in enumerate(y) if i != j])
    kxy = np.mean([k(a, b) for a in x for b in y])
    assert J.mmd(x, y, unbiased=True) == pytest.approx(1000 * (kxx + kyy - 2 * kxy))
    biased = J.mmd(x, y)  # the reference's estimate sits above, within the stated bound
    assert 0 < biased - J.mmd(x, y, unbiased=True) <= 1000 * 0.02 * (1 / 6 + 1 / 5)
    with pytest.raises(BadInput, match="2 samples"):
        J.mmd(x[:1], y, unbiased=True)


def test_real_weights_offline_are_refused_with_where_to_put_them():
    with pytest.raises(WeightsUnavailable, match=r"HPS_v2\.1_compressed\.pt.*attach"):
        J.load_hps(device="cpu", offline=True)
    with pytest.raises(WeightsUnavailable, match="PickScore_v1.*hf download"):
        J.load_pickscore(device="cpu", offline=True)
    with pytest.raises(WeightsUnavailable, match="blip-vqa-base"):
        J.load_vqa(device="cpu", offline=True)
    with pytest.raises(WeightsUnavailable, match=r"ImageReward\.pt"):
        J.load_imagereward(device="cpu", offline=True)
    with pytest.raises(BadInput, match="one prompt per image"):
        J.load_judge("pickscore", device="cpu", tiny=True).score(
            [Image.new("RGB", (8, 8))] * 2, ["a", "b", "c"])


# ---- the judges in a sweep, the CLI, and the sanity check ----

def test_a_sweep_judges_its_images_and_asks_questions(tmp_path, capsys):
    """The judges as a grid's iqa names: a column each, read by summarize with its
    direction; an attribute grid gets VQA's attribute control beside (here without) CLIP's;
    the CLI reads each image's prompt from its recipe."""
    from pegu.cli import main
    from pegu.lab.studies import summarize
    from pegu.lab.sweep import sweep

    grid = {"base": {"generate": {"width": 64, "height": 64, "steps": 1}, "target": [128, 128],
                     "upscale": {"model": "realesr-animevideov3"}},
            "models": ["tiny-sd15"], "seeds": [0],
            "attributes": {"template": "portrait of a woman with {hair} hair",
                           "hair": ["red", "black", "blond"],
                           "question": "Does the woman have {hair} hair?"},
            "iqa": ["tiny-pickscore", "tiny-hpsv2.1", "tiny-imagereward", "tiny-vqa"]}
    table = sweep(grid, tmp_path / "sweep")
    for c in ("iqa.tiny-pickscore", "iqa.tiny-hpsv2.1", "iqa.tiny-imagereward", "iqa.tiny-vqa"):
        assert table[c].notna().all() and table[c].nunique() > 1, c
    assert table["iqa.tiny-vqa"].between(0, 1).all()
    assert table.vqa_hit.isin([0.0, 1.0]).all() and table.vqa_yes.isin([0.0, 1.0]).all()
    assert table.vqa_control.iloc[0] == pytest.approx(table.vqa_hit.mean(), abs=1e-4)
    assert table.attribute_chance.eq(round(1 / 3, 4)).all()
    # each image was asked its variant's question (TIFA-style), not the VQAScore template
    vqa = J.load_vqa("tiny", device="cpu")
    for _, row in table.iterrows():
        hair = row["generate.prompt"].split("with ")[1].split(" hair")[0]
        asked = [vqa.yes_no(Image.open(row["image"]).convert("RGB"),
                            f"Does the woman have {h} hair?") for h in ("red", "black", "blond")]
        assert row.vqa_yes == float(asked[["red", "black", "blond"].index(hair)][0]
                                    > asked[["red", "black", "blond"].index(hair)][1])
        assert row.vqa_hit == float(int(np.argmax([y for y, _ in asked]))
                                    == ["red", "black", "blond"].index(hair))
    saved = pd_read(tmp_path / "sweep" / "results.csv")
    assert {"iqa.tiny-pickscore", "vqa_control"} <= set(saved.columns)
    reading = summarize(table)
    assert "Human preference (PickScore) stand-in: tiny-sd15" in reading
    assert "Human preference (HPSv2.1) stand-in" in reading
    assert "Human preference (ImageReward) stand-in" in reading
    assert "Attribute control (VQA questions): tiny-sd15" in reading and "chance 0.33" in reading
    # the CLI, on the sweep's images: prompts from their recipes, the same scores
    images = sorted((tmp_path / "sweep" / "images").glob("*.png"))
    assert main(["iqa", *map(str, images), "--metrics", "tiny-pickscore", "--device", "cpu",
                 "--csv", str(tmp_path / "s.csv")]) == 0
    capsys.readouterr()
    cli = pd_read(tmp_path / "s.csv", index_col=0)["tiny-pickscore"]
    by_image = dict(zip(table["image"].map(lambda p: Path(p).name), table["iqa.tiny-pickscore"]))
    for path, v in cli.items():
        assert v == pytest.approx(by_image[Path(path).name], abs=1e-4)


def pd_read(path, **kw):
    import pandas as pd

    return pd.read_csv(path, **kw)


def test_judges_need_a_prompt(photo_folder, capsys):
    from pegu.cli import main

    assert main(["iqa", str(photo_folder), "--metrics", "tiny-vqa", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "holds no pegu recipe" in err and "--prompt" in err and "Traceback" not in err
    assert main(["iqa", str(photo_folder), "--metrics", "tiny-vqa,piqe", "--prompt",
                 "a photograph", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tiny-vqa" in out and "astronaut.png" in out


def test_cmmd_beside_fid_whole_and_on_crops(photo_folder, random_inception, tmp_path, capsys):
    from pegu.cli import main
    from pegu.lab import iqa

    gen = tmp_path / "generated"
    gen.mkdir()
    for p in sorted(photo_folder.iterdir())[:3]:
        Image.open(p).convert("RGB").filter(__import__("PIL.ImageFilter").ImageFilter
                                            .GaussianBlur(3)).save(gen / p.name)
    r = iqa.cmmd(gen, photo_folder, crop=128, embedder="tiny", device="cpu")
    assert r["n_generated"] == 3 and r["n_real"] == 4 and r["n_crops_generated"] >= 3
    assert r["cmmd"] > r["cmmd_unbiased"] and r["cmmd_crop"] > r["cmmd_crop_unbiased"]
    same = iqa.cmmd(photo_folder, photo_folder, embedder="tiny", device="cpu")
    assert same["cmmd"] == pytest.approx(0, abs=1e-9)
    assert main(["iqa", str(gen), "--metrics", "none", "--real", str(photo_folder), "--crop",
                 "128", "--inception", str(random_inception), "--cmmd", "tiny",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "CMMD " in out and "CMMD_crop" in out and "compare only at equal image counts" in out
    assert main(["iqa", str(gen), "--metrics", "piqe", "--cmmd", "tiny"]) == 2
    assert "--cmmd needs --real" in capsys.readouterr().err


def test_the_sanity_check_orders_real_photos_above_damaged_copies(tmp_path, capsys):
    """pegu iqa --check on the real photographs of people, with the real x4plus as one
    damage: a noise estimator read as a quality score fails (it only sees noise), PIQE
    passes; the verdicts flag a failing metric in summarize's tables."""
    import pandas as pd

    from pegu.cli import main
    from pegu.lab import check
    from pegu.lab.studies import summarize

    assert main(["iqa", "--check", "--metrics", "noise,piqe", "--device", "cpu",
                 "--csv", str(tmp_path / "check.csv")]) == 0
    out = capsys.readouterr().out
    assert "| noise | 0% | 0% | 100% | 0% | 0% | 20% | 20% | **fails** |" in out
    assert "| iqa.piqe |" in out and "x4 upscaler" in out
    table = pd.read_csv(tmp_path / "check.csv")
    alls = table[table.damage == "all"].set_index("metric")
    assert alls.loc["iqa.piqe", "passed"] and not alls.loc["noise", "passed"]
    assert alls.loc["iqa.piqe", "pairs"] == 15 and alls.loc["iqa.piqe", "crop_pairs"] == 60
    assert set(check.verdicts()) == {"noise", "iqa.piqe"}
    # a failing metric is flagged wherever a table shows it; a passing one is not
    check.sanity_check(["sharpness"], upscaler=None, device="cpu")  # noise damage: fails
    assert not check.verdicts()["sharpness"]["passed"]
    rows = pd.DataFrame({"model": ["a"] * 2, "status": "ok", "seconds": [1.0, 1.1],
                         "peak_mib": 10.0, "sharpness": [5.0, 6.0], "iqa.piqe": [30.0, 31.0]})
    reading = summarize(rows)
    assert "sharpness ⚠" in reading and "iqa.piqe ⚠" not in reading
    from pegu.lab.plots import axis_label
    from pegu.lab.studies import overview

    assert list(overview(rows).columns)[-2:] == ["sharpness ⚠", "iqa.piqe"]
    assert "⚠ failed pegu's sanity check" in axis_label("sharpness")
    assert "⚠" not in axis_label("iqa.piqe")
    assert "failed pegu's sanity check" not in summarize(rows.drop(columns="sharpness"))
    check.check_path().write_text("not json")  # a damaged file: no flags, no crash
    assert check.verdicts() == {} and "⚠" not in summarize(rows)


def test_summarize_reads_the_judges_with_intervals():
    """Six runs per model: intervals, a leader where they separate, "no measured
    difference" where they overlap, the direction of each judge."""
    import pandas as pd

    from pegu.lab.studies import summarize

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"model": ["a"] * 6 + ["b"] * 6, "status": "ok",
                         "seconds": 1.0 + rng.random(12) * 0.01, "peak_mib": 100.0,
                         "iqa.hpsv2.1": np.r_[0.30 + rng.random(6) * 0.01,
                                              0.20 + rng.random(6) * 0.01],
                         "iqa.pickscore": 21 + rng.random(12)})
    reading = summarize(rows)
    assert "Best human preference (HPSv2.1): **a**" in reading
    assert "Human preference (PickScore): no measured difference between" in reading
    row = reading.split("\n| a | 6 | ")[1].split("\n")[0]  # the means table, with intervals
    assert row.count("[") == 4 and "0.30" in row, row
