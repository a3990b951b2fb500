"""A1111 prompt syntax and long prompts (pegu.prompts), with tiny pipelines on the CPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pegu.generate import load_generator
from pegu.generate.prompts import CHUNK, chunks, embeddings, parse
from pegu.core.settings import GenerateSettings

# A1111's own examples: modules/prompt_parser.py, parse_prompt_attention's docstring
DOCSTRING = {
    "normal text": [("normal text", 1.0)],
    "an (important) word": [("an ", 1.0), ("important", 1.1), (" word", 1.0)],
    "(unbalanced": [("unbalanced", 1.1)],
    "\\(literal\\]": [("(literal]", 1.0)],
    "(unnecessary)(parens)": [("unnecessaryparens", 1.1)],
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
        ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
}
# its wiki, Features -> Attention/emphasis
WIKI = {
    "a (word)": 1.1, "a ((word))": 1.21, "a (((word)))": 1.331, "a [word]": 1 / 1.1,
    "a (word:1.5)": 1.5, "a (word:0.25)": 0.25, "a (word: 1.5)": 1.5,
}


@pytest.mark.parametrize("text", DOCSTRING)
def test_parser_matches_a1111_docstring(text):
    assert parse(text) == DOCSTRING[text]


@pytest.mark.parametrize("text", WIKI)
def test_parser_matches_a1111_wiki(text):
    (first, w1), (word, weight) = parse(text)
    assert (first, w1, word) == ("a ", 1.0, "word") and weight == pytest.approx(WIKI[text])


def test_escapes_and_break():
    assert parse("a \\(word\\)") == [("a (word)", 1.0)]
    assert parse("a cat BREAK a (dog)") == [("a cat", 1.0), ("BREAK", -1), ("a ", 1.0),
                                            ("dog", 1.1)]
    assert parse("breaking news") == [("breaking news", 1.0)]  # only the capital word


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    import os

    os.environ["PEGU_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return load_generator("tiny-sd15")


def _one(tok, word):
    ids = tok(word, add_special_tokens=False).input_ids
    assert len(ids) == 1, (word, ids)  # the tiny tokenizer knows these words whole
    return ids[0]


def test_chunks_hand_computed(sd15):
    """81 one-token words with a comma at 61: the first chunk fills at 75 tokens, the 14
    words after the comma move to the second chunk (A1111's comma backtrack, 20 tokens)."""
    tok = sd15.pipe.tokenizer
    film, hair, comma = _one(tok, "film"), _one(tok, "hair"), _one(tok, ",")
    bos, eos = tok.bos_token_id, tok.eos_token_id
    text = "film " * 60 + ", " + "hair " * 20
    (a, wa), (b, wb) = chunks(tok, text)
    assert a == [bos] + [film] * 60 + [comma] + [eos] * 14 + [eos]
    assert b == [bos] + [hair] * 20 + [eos] * 55 + [eos]
    assert wa == wb == [1.0] * 77
    # no comma near the end: cut at 75
    (a, _), (b, _) = chunks(tok, "film " * 80)
    assert a == [bos] + [film] * 75 + [eos] and b[:7] == [bos] + [film] * 5 + [eos]
    # BREAK closes the chunk; weights ride on the tokens
    (a, wa), (b, wb) = chunks(tok, "(film:1.5) BREAK hair")
    assert a[:3] == [bos, film, eos] and wa[:3] == [1.0, 1.5, 1.0]
    assert b[:3] == [bos, hair, eos] and wb[:3] == [1.0, 1.0, 1.0]
    assert len(chunks(tok, "")) == 1 and all(len(c[0]) == CHUNK + 2 for c in chunks(tok, text))


def test_emphasis_scales_tokens_and_keeps_the_mean(sd15):
    pipe = sd15.pipe
    plain = embeddings(pipe, "a photo of a man", None)["prompt_embeds"]
    weighted = embeddings(pipe, "a photo of a (man:1.5)", None)["prompt_embeds"]
    ids, w = chunks(pipe.tokenizer, "a photo of a (man:1.5)")[0]
    factor = torch.tensor(w)[None, :, None]
    expected = plain * factor
    expected = expected * (plain.mean() / expected.mean())
    assert torch.allclose(weighted, expected, atol=1e-6)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), abs=1e-6)


def test_long_prompt_all_read_and_negative_padded(sd15):
    """A prompt past 77 tokens is read whole (two chunks); the one-chunk negative is padded
    with the empty prompt's chunk, as A1111 pads."""
    pipe = sd15.pipe
    long = ", ".join(["portrait of a smiling old man with grey hair"] * 10) + ", zebra"
    found = chunks(pipe.tokenizer, long)
    read = [i for ids, _ in found for i in ids if i not in (pipe.tokenizer.bos_token_id,
                                                           pipe.tokenizer.eos_token_id)]
    assert len(found) > 1 and pipe.tokenizer.decode(read).endswith("zebra")
    e = embeddings(pipe, long, "blurry")
    n = 77 * len(found)
    assert e["prompt_embeds"].shape[1] == e["negative_prompt_embeds"].shape[1] == n
    empty = embeddings(pipe, "", None)["prompt_embeds"]
    assert torch.equal(e["negative_prompt_embeds"][:, 77:154], empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "dropped" warning any more
        r = load_generator("tiny-sd15").generate(
            GenerateSettings(long, steps=1, width=64, height=64), progress=False)
    assert r.warnings == ()


def test_default_negative_prompt_is_used_whole(sd15):
    """Realistic Vision's card negative prompt (94 CLIP tokens) reaches the model whole."""
    from pegu.core.registry import generator_spec

    neg = generator_spec("realistic-vision-v6").negative
    tok = sd15.pipe.tokenizer
    read = [i for ids, _ in chunks(tok, neg) for i in ids
            if i not in (tok.bos_token_id, tok.eos_token_id)]
    assert tok.decode(read).replace(" ", "").endswith("clonedface,disfigured")
    e = embeddings(sd15.pipe, "a photo", neg)
    assert e["negative_prompt_embeds"].shape[1] == 77 * len(chunks(tok, neg)) > 77


def test_short_plain_prompt_is_the_same_image_both_ways(sd15):
    """Without brackets, A1111 encoding of a short prompt is exactly diffusers' own."""
    s = dict(prompt="a photo of an old man", negative_prompt="blurry", width=64, height=64,
             steps=2, seed=3)
    a = sd15.generate(GenerateSettings(**s, prompt_syntax="plain"), progress=False).image
    b = sd15.generate(GenerateSettings(**s), progress=False).image
    assert np.array_equal(np.asarray(a), np.asarray(b))
    c = sd15.generate(GenerateSettings(**{**s, "prompt": "a photo of an (old:1.6) man"}),
                      progress=False).image
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_sdxl_both_encoders_chunked_pooled_from_the_first():
    g = load_generator("tiny-sdxl")
    pipe = g.pipe
    long = ", ".join(["portrait of a smiling old man with grey hair"] * 10)
    e = embeddings(pipe, long, "blurry")
    n = 77 * len(chunks(pipe.tokenizer, long))
    width = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert e["prompt_embeds"].shape == e["negative_prompt_embeds"].shape == (1, n, width)
    ids = torch.tensor([chunks(pipe.tokenizer_2, long)[0][0]])
    with torch.no_grad():
        pooled = pipe.text_encoder_2(ids)[0]
    assert torch.equal(e["pooled_prompt_embeds"], pooled)
    # an empty negative on SDXL base is zeros, as diffusers does (force_zeros_for_empty_prompt)
    z = embeddings(pipe, long, "")
    assert not z["negative_prompt_embeds"].any() and not z["negative_pooled_prompt_embeds"].any()
    r = g.generate(GenerateSettings(long, steps=1, width=64, height=64), progress=False)
    assert r.image.size == (64, 64)


def test_extra_network_tags_are_clear_errors(sd15, tmp_path, monkeypatch):
    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"LoRA add_detail not found in {tmp_path}"):
        sd15.generate(GenerateSettings("a photo <lora:add_detail:0.5>", steps=1, width=64,
                                       height=64), progress=False)
    with pytest.raises(ValueError, match="not A1111's hypernetworks"):
        sd15.generate(GenerateSettings("a photo <hypernet:x:1>", steps=1, width=64,
                                       height=64), progress=False)
    with pytest.raises(ValueError, match="prompt_syntax must be 'a1111' or 'plain'"):
        GenerateSettings("x", prompt_syntax="compel")


def _tiny_lora(path):
    """A LoRA for tiny-sd15 made with peft (UNet attention layers), saved in the diffusers
    LoRA format, with non-zero weights so that it changes the image. (Text-encoder LoRAs go
    through transformers' peft integration, which transformers 5.24 refuses with peft 0.21,
    the newest release: pegu then says so, naming the file.)"""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from pegu.generate.tiny import build_tiny

    pipe = build_tiny("sd15")
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=[
        "to_k", "to_q", "to_v", "to_out.0"]))
    torch.manual_seed(2)
    for name, param in pipe.unet.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        path.parent, weight_name=path.name,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet))


def test_lora_tags_load_from_the_lora_folder_and_switch_off(tmp_path, monkeypatch):
    """<lora:name:w> activates NAME.safetensors from lora/ at weight w; the next call
    without the tag gives the image it gave before the LoRA."""
    from pegu.pipeline import run
    from pegu.core.settings import RunSettings, UpscaleSettings

    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path))
    (tmp_path / "lora").mkdir()
    _tiny_lora(tmp_path / "lora" / "tinylora.safetensors")
    g = load_generator("tiny-sd15")
    s = dict(width=64, height=64, steps=2, seed=5)
    before = np.asarray(g.generate(GenerateSettings("a photo", **s), progress=False).image)
    r = g.generate(GenerateSettings("a photo <lora:tinylora:0.8>", **s), progress=False)
    assert r.loras == {"tinylora": 0.8}
    assert not np.array_equal(before, np.asarray(r.image))
    half = g.generate(GenerateSettings("a photo <lora:tinylora:0.3>", **s), progress=False)
    assert not np.array_equal(np.asarray(r.image), np.asarray(half.image))
    # A1111's text-encoder and UNet weights: this LoRA has UNet layers only, so its UNet
    # weight alone decides, given by position or by name
    for tag in ("<lora:tinylora:0.8:0.3>", "<lora:tinylora:1:unet=0.3>"):
        split = g.generate(GenerateSettings(f"a photo {tag}", **s), progress=False)
        assert np.array_equal(np.asarray(split.image), np.asarray(half.image)), tag
    assert split.loras == {"tinylora": [1.0, 0.3]}
    # A1111 skips a kind it does not know (case counts) and keeps the negative's tags as text
    with pytest.warns(UserWarning, match="skips unknown extra networks"):
        other = g.generate(GenerateSettings("a photo <LoRA:tinylora:0.8>", **s), progress=False)
    assert other.loras == {} and np.array_equal(before, np.asarray(other.image))
    neg = g.generate(GenerateSettings("a photo", negative_prompt="<lora:tinylora:1>", **s),
                     progress=False)
    assert neg.loras == {} and not np.array_equal(before, np.asarray(neg.image))
    after = g.generate(GenerateSettings("a photo", **s), progress=False)
    assert after.loras == {} and np.array_equal(before, np.asarray(after.image))
    plain = g.generate(GenerateSettings("a photo", prompt_syntax="plain", **s), progress=False)
    assert np.array_equal(before, np.asarray(plain.image))
    # the tag stays in the saved prompt, so the PNG re-runs with it
    out = run(RunSettings(GenerateSettings("a photo <lora:tinylora:0.8>", **s),
                          model="tiny-sd15", upscale=UpscaleSettings("realesr-animevideov3"),
                          target=(128, 128)), g, progress=False)
    assert out.choices.loras == {"tinylora": 0.8}
    assert np.array_equal(np.asarray(out.base), np.asarray(r.image))


def _a1111_embedding(path, vectors):
    """A textual-inversion file in A1111's format (string_to_param)."""
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors},
                "name": path.stem, "step": 1000}, path)


def test_textual_inversion_from_the_embeddings_folder(sd15, tmp_path, monkeypatch):
    """A word naming a file in embeddings/ is that embedding (all its vectors, kept in one
    chunk); the PNG records it as A1111 does, and an image naming one that is missing is a
    clear error."""
    from PIL import Image

    from pegu.pipeline.recipe import read_settings
    from pegu.pipeline import run
    from pegu.core.settings import RunSettings, UpscaleSettings

    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path / "networks"))
    (tmp_path / "networks" / "embeddings").mkdir(parents=True)
    torch.manual_seed(1)
    _a1111_embedding(tmp_path / "networks" / "embeddings" / "tinyneg.pt", torch.randn(2, 32))
    pipe = sd15.pipe
    without = embeddings(pipe, "a photo", "blurry")["negative_prompt_embeds"]
    # A1111 matches an embedding by its name's token ids, so case does not matter
    s = GenerateSettings("a photo", negative_prompt="(TinyNeg:1.2), blurry", steps=1,
                         width=64, height=64)
    r = sd15.generate(s, progress=False)
    assert list(r.embeddings) == ["tinyneg"] and len(r.embeddings["tinyneg"]) == 12
    vocab = pipe.tokenizer.get_vocab()
    ids, weights = chunks(pipe.tokenizer, "(tinyneg:1.2), blurry")[0]
    head = "<pegu-ti:tinyneg>"
    assert ids[1:3] == [vocab[head], vocab[head + "_1"]] and weights[1:3] == [1.2, 1.2]
    assert chunks(pipe.tokenizer, "(TINYNEG:1.2), blurry")[0][0] == ids
    assert vocab[head] not in chunks(pipe.tokenizer, "tiny neg")[0][0]  # other tokens
    # the embedding's vectors are what the encoder reads at those positions
    table = pipe.text_encoder.get_input_embeddings().weight
    assert torch.allclose(table[vocab[head + "_1"]], torch.load(
        tmp_path / "networks" / "embeddings" / "tinyneg.pt")["string_to_param"]["*"][1])
    with_ti = embeddings(pipe, "a photo", "tinyneg, blurry")["negative_prompt_embeds"]
    assert not torch.equal(without, with_ti)

    result = run(RunSettings(s, model="tiny-sd15", upscale=UpscaleSettings(
        "realesr-animevideov3"), target=(128, 128)), sd15, progress=False)
    path = result.save(tmp_path / "ti.png")
    with Image.open(path) as im:
        assert f"TI hashes: \"tinyneg: {r.embeddings['tinyneg']}\"" in im.text["parameters"]
    # an A1111 PNG that used it re-runs; without the file it is a clear error
    a1111 = tmp_path / "a1111.png"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", im.text["parameters"].replace("Model: tiny-sd15, ", ""))
    Image.new("RGB", (8, 8)).save(a1111, pnginfo=info)
    assert "TinyNeg" in read_settings(a1111, model="tiny-sd15").generate.negative_prompt
    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="tinyneg.*elsewhere.*embeddings"):
        read_settings(a1111, model="tiny-sd15")


def test_sdxl_embeddings_need_both_encoders(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("PEGU_NETWORKS", str(tmp_path))
    (tmp_path / "embeddings").mkdir()
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)},
              str(tmp_path / "embeddings" / "xlneg.safetensors"))
    _a1111_embedding(tmp_path / "embeddings" / "sd15neg.pt", torch.randn(1, 32))
    g = load_generator("tiny-sdxl")
    r = g.generate(GenerateSettings("a photo", negative_prompt="xlneg", steps=1, width=64,
                                    height=64), progress=False)
    assert list(r.embeddings) == ["xlneg"]
    assert all("<pegu-ti:xlneg>" in t.get_vocab() for t in (g.pipe.tokenizer, g.pipe.tokenizer_2))
    with pytest.raises(ValueError, match="sd15neg.pt.*clip_l and clip_g"):
        g.generate(GenerateSettings("a photo", negative_prompt="sd15neg", steps=1, width=64,
                                    height=64), progress=False)
