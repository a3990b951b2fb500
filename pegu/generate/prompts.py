"""AUTOMATIC1111's prompt syntax and any prompt length, turned into text-encoder embeddings.

What A1111 does, and so what pegu does (sources: A1111's modules/prompt_parser.py,
``parse_prompt_attention`` and its docstring examples; modules/sd_hijack_clip.py, chunking;
modules/sd_emphasis.py, the "Original" emphasis; its wiki, Features → Attention/emphasis):

* ``(x)`` multiplies x's weight by 1.1, ``(x:w)`` by w, ``[x]`` divides by 1.1; brackets
  nest and multiply; an unclosed bracket applies to the end; ``\\(`` ``\\)`` ``\\[`` ``\\]``
  ``\\\\`` are literal characters; ``BREAK`` (capitals) ends the current chunk.
* Tokens are packed into chunks of 75 (plus start and end), padded with the end token; when a
  chunk fills up, the words after its last comma (if within the last 20 tokens) move to the
  next chunk. Each chunk is encoded on its own and the chunks are concatenated, so a prompt
  has no length limit.
* Each chunk's embedding is multiplied token by token by its weights, then rescaled so its
  mean is what it was before weighting.
* Prompt and negative prompt are padded to the same number of chunks with the embedding of
  an empty prompt (A1111's "pad prompt/negative prompt to be same length").
* SDXL: both text encoders, chunk by chunk (penultimate hidden states, concatenated); the
  pooled embedding is the second encoder's of the first chunk.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..core import compat
from ..core.errors import BadInput, MissingFile
from ..sources import cache_dir, sha256_file

CHUNK = 75
COMMA_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"
ROUND, SQUARE = 1.1, 1 / 1.1

# A1111 >= 1.7: escapes, brackets, ":weight)" (spaces allowed), plain text, stray ":"
_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
# extra networks: <lora:name:weight>, <hypernet:name:weight> (A1111 modules/extra_networks.py)
EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def parse(text: str) -> list[tuple[str, float]]:
    """``text`` as (fragment, weight) pairs, A1111's way; ``("BREAK", -1)`` marks a BREAK.

    >>> parse("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    out: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] *= factor

    for m in _ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):  # an escape; a lone backslash is dropped, as in A1111
            out.append([piece[1:], 1.0])
        elif piece == "(":
            rounds.append(len(out))
        elif piece == "[":
            squares.append(len(out))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif piece == ")" and rounds:
            scale(rounds.pop(), ROUND)
        elif piece == "]" and squares:
            scale(squares.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i:
                    out.append(["BREAK", -1])
                out.append([part, 1.0])
    for start in rounds:
        scale(start, ROUND)
    for start in squares:
        scale(start, SQUARE)
    merged: list[list] = []
    for item in out or [["", 1.0]]:
        if merged and merged[-1][1] == item[1]:
            merged[-1][0] += item[0]
        else:
            merged.append(item)
    return [(t, w) for t, w in merged]


def extra_networks(text: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """``text`` without its ``<kind:args>`` tags, and the tags as (kind, [args])."""
    found = [(m.group(1), m.group(2).split(":")) for m in EXTRA_NETWORK.finditer(text)]
    return EXTRA_NETWORK.sub("", text), found


def chunks(tokenizer, text: str, weighted: bool = True) -> list[tuple[list[int], list[float]]]:
    """Token ids and weights of ``text`` in chunks of 77 (start, 75, end), A1111's way.

    weighted=False reads the text literally (no brackets, no BREAK) but still chunks it.
    Runs of tokens added by textual inversion (ids past the base vocabulary) stay in one
    chunk.
    """
    parsed = parse(text) if weighted else [(text, 1.0)]
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.get_vocab().get(",</w>")
    base = getattr(tokenizer, "vocab_size", None) or len(tokenizer)
    done: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal ids, weights, last_comma
        pad = CHUNK - len(ids)
        done.append(([start] + ids + [end] * pad + [end], [1.0] + weights + [1.0] * pad + [1.0]))
        ids, weights, last_comma = [], [], -1

    for fragment, weight in parsed:
        if weight == -1 and fragment == "BREAK":
            close()
            continue
        tokens = tokenizer(fragment, truncation=False, add_special_tokens=False,
                           verbose=False).input_ids
        i = 0
        while i < len(tokens):
            unit = 1
            while tokens[i] >= base and i + unit < len(tokens) and tokens[i + unit] >= base:
                unit += 1  # a multi-vector embedding: never split across chunks
            if tokens[i] == comma:
                last_comma = len(ids)
            elif (len(ids) == CHUNK and last_comma != -1
                  and len(ids) - last_comma <= COMMA_BACKTRACK):
                keep = last_comma + 1
                moved = ids[keep:], weights[keep:]
                ids, weights = ids[:keep], weights[:keep]
                close()
                ids, weights = list(moved[0]), list(moved[1])
            if len(ids) + unit > CHUNK:
                close()
            ids += tokens[i:i + unit]
            weights += [weight] * unit
            i += unit
    if ids or not done:
        close()
    return done


def _emphasis(z, weights):
    """A1111's "Original" emphasis: weight each token, then restore the chunk's mean."""
    if bool((weights == 1).all()):
        return z
    before = z.mean()
    z = z * weights[..., None]
    ratio = before / z.mean()
    return z * ratio if bool(ratio.isfinite()) else z  # a zero mean has nothing to restore


def _encode_chunks(pipe, text: str, weighted: bool, device):
    """(embeddings 1×(77·n)×C, pooled 1×P or None) of ``text`` for ``pipe``'s encoders."""
    import torch

    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    pairs = [(t, e) for t, e in pairs if t is not None and e is not None]
    sdxl = hasattr(pipe, "text_encoder_2")
    per_encoder, pooled = [], None
    for k, (tok, enc) in enumerate(pairs):
        text_k = pipe.maybe_convert_prompt(text, tok) if hasattr(pipe, "maybe_convert_prompt") \
            else text
        zs = []
        for n, (ids, weights) in enumerate(chunks(tok, text_k, weighted)):
            pad = tok.pad_token_id
            if pad is not None and pad != tok.eos_token_id:  # OpenCLIP pads after the end
                first_end = ids.index(tok.eos_token_id)
                ids = ids[:first_end + 1] + [pad] * (len(ids) - first_end - 1)
            t = torch.tensor([ids], device=device)
            with torch.no_grad():
                out = enc(t, output_hidden_states=sdxl)
            z = out.hidden_states[-2] if sdxl else out[0]
            if sdxl and k == len(pairs) - 1 and n == 0:
                pooled = out[0]
            zs.append(_emphasis(z, torch.tensor([weights], device=z.device, dtype=z.dtype)))
        per_encoder.append(zs)
    if len(per_encoder) == 2 and len(per_encoder[0]) != len(per_encoder[1]):
        n = min(len(per_encoder[0]), len(per_encoder[1]))  # tokenizers split differently
        per_encoder = [zs[:n] for zs in per_encoder]
    joined = [torch.cat(zs, dim=-1) for zs in zip(*per_encoder)]
    return torch.cat(joined, dim=1), pooled


def embeddings(pipe, prompt: str, negative: str | None, *, weighted: bool = True) -> dict:
    """The ``prompt_embeds`` keywords (and SDXL's pooled ones) for a diffusers call, with
    prompt and negative padded to the same number of chunks. An empty negative on a model
    configured with ``force_zeros_for_empty_prompt`` (SDXL base) is zeros, as diffusers does."""
    import torch

    device = pipe._execution_device
    pos, pos_pooled = _encode_chunks(pipe, prompt, weighted, device)
    zeros = not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    if zeros:
        neg, neg_pooled = torch.zeros_like(pos), (torch.zeros_like(pos_pooled)
                                                  if pos_pooled is not None else None)
    else:
        neg, neg_pooled = _encode_chunks(pipe, negative or "", weighted, device)
    if pos.shape[1] != neg.shape[1]:
        empty = torch.zeros_like(pos[:, :77]) if zeros else _encode_chunks(pipe, "", False,
                                                                           device)[0]
        short, long_ = (pos, neg) if pos.shape[1] < neg.shape[1] else (neg, pos)
        reps = (long_.shape[1] - short.shape[1]) // empty.shape[1]
        short = torch.cat([short] + [empty] * reps, dim=1)
        pos, neg = (short, long_) if pos.shape[1] < neg.shape[1] else (long_, short)
    out = {"prompt_embeds": pos, "negative_prompt_embeds": neg}
    if pos_pooled is not None:
        out.update(pooled_prompt_embeds=pos_pooled, negative_pooled_prompt_embeds=neg_pooled)
    return out


# ---- textual inversion: A1111's embeddings/ folder ----

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


def networks_dir() -> Path:
    """Where pegu looks for A1111 extra networks: ``$PEGU_NETWORKS``, else
    ``<pegu cache>/networks``; textual-inversion embeddings in its ``embeddings/`` folder
    (used when their file name appears in a prompt as a word, as in A1111)."""
    env = os.environ.get("PEGU_NETWORKS")
    return Path(env).expanduser() if env else cache_dir() / "networks"


def _network_files(*subfolders: str) -> dict[str, Path]:
    """{name: file} of the weight files in ``networks_dir()/<subfolder>``, first one wins."""
    found: dict[str, Path] = {}
    for sub in subfolders:
        folder = networks_dir() / sub
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.suffix.lower() in EMBEDDING_SUFFIXES and f.is_file():
                    found.setdefault(f.stem, f)
    return found


def embedding_files() -> dict[str, Path]:
    """{name: file} of the embeddings in ``networks_dir()/embeddings``."""
    return _network_files("embeddings")


def _named(name: str, texts) -> bool:
    word = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
    return any(word.search(t or "") for t in texts)


def _embedding_state(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_embeddings(pipe, texts) -> list[tuple[str, Path]]:
    """Load into ``pipe`` the embeddings whose names ``texts`` use (once per pipeline);
    returns (name, file) of each one the texts use. SD 1.5 files hold one tensor (A1111's
    ``string_to_param``, or diffusers' format); SDXL files hold ``clip_l`` and ``clip_g``."""
    used = [(n, f) for n, f in embedding_files().items() if _named(n, texts)]
    for name, path in used:
        if name in pipe.tokenizer.get_vocab():
            continue  # loaded by an earlier call
        try:
            if hasattr(pipe, "text_encoder_2"):
                state = _embedding_state(path)
                if not {"clip_l", "clip_g"} <= set(state):
                    raise BadInput("an SDXL embedding holds clip_l and clip_g tensors; this "
                                     f"one holds {sorted(state)} (an SD 1.5 embedding?)")
                pipe.load_textual_inversion(state["clip_l"], token=name,
                                            text_encoder=pipe.text_encoder,
                                            tokenizer=pipe.tokenizer)
                pipe.load_textual_inversion(state["clip_g"], token=name,
                                            text_encoder=pipe.text_encoder_2,
                                            tokenizer=pipe.tokenizer_2)
            else:
                pipe.load_textual_inversion(str(path), token=name)
        except (ValueError, KeyError, RuntimeError) as e:
            raise BadInput(f"cannot use the embedding {path}: {e}") from e
    return used


def file_hash(path: Path) -> str:
    """The first 12 hex digits of the file's SHA-256 (A1111's short hash for embeddings)."""
    return sha256_file(path)[:12]


# ---- LoRA: <lora:name:weight> from networks_dir()/lora ----

def lora_files() -> dict[str, Path]:
    """{name: file} of the LoRAs in ``networks_dir()/lora`` (or A1111's ``Lora``)."""
    return _network_files("lora", "Lora")


def lora_tags(text: str) -> list[tuple[str, float]]:
    """(name, weight) of each ``<lora:name>`` / ``<lora:name:weight>`` in ``text`` (A1111's
    default weight is 1); other extra-network kinds are an error."""
    out = []
    for kind, args in extra_networks(text)[1]:
        if kind.lower() != "lora":
            raise BadInput(f"<{kind}:{':'.join(args)}>: pegu loads LoRAs (<lora:NAME:WEIGHT>) "
                             f"but not A1111's {kind!r} networks; remove the tag")
        try:
            weight = float(args[1]) if len(args) > 1 and args[1] else 1.0
        except ValueError:
            raise BadInput(f"<lora:{':'.join(args)}>: the weight must be a number, e.g. "
                             f"<lora:{args[0]}:0.8>") from None
        out.append((args[0], weight))
    return out


def apply_loras(pipe, tags: list[tuple[str, float]],
                fixed: dict[str, float] | None = None) -> dict[str, float]:
    """Activate exactly ``tags`` on ``pipe`` (UNet and text encoders, A1111's single weight),
    loading each file once, together with the ``fixed`` adapters already loaded {adapter:
    weight} (a distillation LoRA); nothing to activate turns every LoRA off. Returns the
    tags' {name: weight}."""
    fixed = fixed or {}
    loaded = set(pipe.get_list_adapters().get("unet", [])) if hasattr(
        pipe, "get_list_adapters") and getattr(pipe.unet, "peft_config", None) else set()
    if not tags and not fixed:
        if loaded:
            pipe.disable_lora()
        return {}
    files = lora_files() if tags else {}
    missing = [n for n, _ in tags if n not in files]
    if missing:
        raise MissingFile(
            f"LoRA {', '.join(missing)} not found in {networks_dir() / 'lora'}: put "
            "NAME.safetensors there, or point $PEGU_NETWORKS at the folder that holds lora/")
    weights: dict[str, float] = {}
    for name, weight in tags:
        weights[name] = weights.get(name, 0.0) + weight  # A1111 adds repeated tags
    adapters = {name: re.sub(r"\W", "_", name) for name in weights}
    for name, adapter in adapters.items():
        if adapter not in loaded:
            try:
                with compat.quiet(), compat.diffusers_quiet():
                    pipe.load_lora_weights(str(files[name].parent),
                                           weight_name=files[name].name, adapter_name=adapter)
            except (ValueError, KeyError, RuntimeError) as e:
                raise BadInput(f"cannot use the LoRA {files[name]}: {e}") from e
    pipe.enable_lora()
    pipe.set_adapters([*adapters.values(), *fixed], [*weights.values(), *fixed.values()])
    return weights
