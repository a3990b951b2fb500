"""A1111 prompt syntax and long prompts (pegu.prompts), with tiny pipelines on the CPU."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pegu.generate import load_generator
from pegu.prompts import CHUNK, chunks, embeddings, parse
from pegu.settings import GenerateSettings

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
    from pegu.registry import generator_spec

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


def test_extra_network_tags_are_a_clear_error(sd15):
    with pytest.raises(ValueError, match="<lora:add_detail:0.5>.*does not load"):
        sd15.generate(GenerateSettings("a photo <lora:add_detail:0.5>", steps=1, width=64,
                                       height=64), progress=False)
    with pytest.raises(ValueError, match="prompt_syntax must be 'a1111' or 'plain'"):
        GenerateSettings("x", prompt_syntax="compel")
