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

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core import compat
from ..core.errors import BadInput, MissingFile, PeguError
from ..sources import cache_dir, load_state_dict, read_weights, sha256_file

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
    A loaded textual-inversion embedding replaces the tokens of its name wherever they occur
    (A1111 matches by token ids, so case does not matter), and its vectors stay in one
    chunk.
    """
    inversions = _inversions(tokenizer)
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
        tokens = _swap(tokenizer(fragment, truncation=False, add_special_tokens=False,
                                 verbose=False).input_ids, inversions)
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


TI_PREFIX = "<pegu-ti:"  # the tokens an embedding is loaded under; no prompt writes them


def _inversions(tokenizer) -> list[tuple[list[int], list[int]]]:
    """[(the token ids of an embedding's name, the ids of its vectors)] of the embeddings
    loaded into ``tokenizer``, longest name first (A1111's ``ids_lookup``)."""
    vocab = tokenizer.get_vocab()
    heads = sorted(t for t in vocab if t.startswith(TI_PREFIX) and t.endswith(">"))
    out = []
    for head in heads:
        name = head[len(TI_PREFIX):-1]
        ids = [vocab[head]]
        while f"{head}_{len(ids)}" in vocab:
            ids.append(vocab[f"{head}_{len(ids)}"])
        out.append((name_ids(tokenizer, name), ids))
    return sorted(out, key=lambda p: -len(p[0]))


def name_ids(tokenizer, name: str) -> list[int]:
    """The token ids A1111 matches an embedding by: its name, tokenized."""
    return tokenizer(name, add_special_tokens=False, verbose=False).input_ids


def _swap(tokens: list[int], inversions) -> list[int]:
    """``tokens`` with each embedding's name replaced by its vectors' ids."""
    if not inversions:
        return tokens
    out, i = [], 0
    while i < len(tokens):
        for name, ids in inversions:
            if name and tokens[i:i + len(name)] == name:
                out += ids
                i += len(name)
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _emphasis(z, weights):
    """A1111's "Original" emphasis: weight each token, then restore the chunk's mean."""
    if bool((weights == 1).all()):
        return z
    before = z.mean()
    z = z * weights[..., None]
    ratio = before / z.mean()
    return z * ratio if bool(ratio.isfinite()) else z  # a zero mean has nothing to restore


def encode(pipe, text: str, weighted: bool, device, clip_skip: int = 1):
    """(embeddings 1×(77·n)×C, pooled 1×P or None) of ``text`` for ``pipe``'s encoders.
    clip_skip: A1111's "Clip skip" (SD 1.5: the hidden state ``clip_skip`` layers from the
    end, through the final layer norm; SDXL always uses the penultimate layer, as A1111
    does unless its sdxl_clip_l_skip option is set)."""
    import torch

    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    pairs = [(t, e) for t, e in pairs if t is not None and e is not None]
    sdxl = hasattr(pipe, "text_encoder_2")
    per_encoder, pooled = [], None
    for k, (tok, enc) in enumerate(pairs):
        zs = []
        for n, (ids, weights) in enumerate(chunks(tok, text, weighted)):
            pad = tok.pad_token_id
            if pad is not None and pad != tok.eos_token_id:  # OpenCLIP pads after the end
                first_end = ids.index(tok.eos_token_id)
                ids = ids[:first_end + 1] + [pad] * (len(ids) - first_end - 1)
            t = torch.tensor([ids], device=device)
            skip = clip_skip > 1 and not sdxl
            with torch.no_grad():
                out = enc(t, output_hidden_states=sdxl or skip)
                z = out.hidden_states[-2] if sdxl else out[0]
                if skip:
                    z = getattr(enc, "text_model", enc).final_layer_norm(
                        out.hidden_states[-clip_skip])
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
    prompt and negative padded to the same number of chunks (A1111's "pad prompt/negative
    prompt" option; prompt editing and AND are pegu.generate.editing's). An empty negative
    on a model configured with ``force_zeros_for_empty_prompt`` (SDXL base) is zeros, as
    diffusers does."""
    import torch

    device = pipe._execution_device
    pos, pos_pooled = encode(pipe, prompt, weighted, device)
    zeros = not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    if zeros:
        neg, neg_pooled = torch.zeros_like(pos), (torch.zeros_like(pos_pooled)
                                                  if pos_pooled is not None else None)
    else:
        neg, neg_pooled = encode(pipe, negative or "", weighted, device)
    if pos.shape[1] != neg.shape[1]:
        empty = torch.zeros_like(pos[:, :77]) if zeros else encode(pipe, "", False,
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


def _used(tokenizer, name: str, texts) -> bool:
    """Whether ``name``'s token ids occur in a fragment of one of ``texts`` (A1111's match:
    by token ids, so ``easynegative`` finds EasyNegative)."""
    want = name_ids(tokenizer, name)
    if not want:
        return False
    for text in texts:
        for fragment, weight in parse(text or ""):
            if weight == -1 and fragment == "BREAK":
                continue
            ids = tokenizer(fragment, add_special_tokens=False, verbose=False).input_ids
            if any(ids[i:i + len(want)] == want for i in range(len(ids) - len(want) + 1)):
                return True
    return False


def load_embeddings(pipe, texts) -> list[tuple[str, Path]]:
    """Load into ``pipe`` the embeddings whose names ``texts`` use, by A1111's rule (the
    name's token ids occur in the text; once per pipeline); returns (name, file) of each one
    the texts use. SD 1.5 files hold one tensor (A1111's ``string_to_param``, or diffusers'
    format); SDXL files hold ``clip_l`` and ``clip_g``."""
    texts = list(texts)
    used = [(n, f) for n, f in embedding_files().items() if _used(pipe.tokenizer, n, texts)]
    for name, path in used:
        token = f"{TI_PREFIX}{name}>"
        if token in pipe.tokenizer.get_vocab():
            continue  # loaded by an earlier call
        state = read_weights(path, "embedding")
        if not isinstance(state, dict):
            raise BadInput(f"the embedding {path} holds no named tensors; it is not a "
                           "textual-inversion embedding")
        try:
            if hasattr(pipe, "text_encoder_2"):
                if not {"clip_l", "clip_g"} <= set(state):
                    raise BadInput(f"cannot use the embedding {path}: an SDXL embedding "
                                   "holds clip_l and clip_g tensors; this one holds "
                                   f"{sorted(state)} (an SD 1.5 embedding?)")
                pipe.load_textual_inversion(state["clip_l"], token=token,
                                            text_encoder=pipe.text_encoder,
                                            tokenizer=pipe.tokenizer)
                pipe.load_textual_inversion(state["clip_g"], token=token,
                                            text_encoder=pipe.text_encoder_2,
                                            tokenizer=pipe.tokenizer_2)
            else:
                pipe.load_textual_inversion(state, token=token)
        except PeguError:
            raise
        except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as e:
            raise BadInput(f"cannot use the embedding {path}: {_reason(e)}. Is it an "
                           f"embedding for this model's family ({_family(pipe)})?") from None
    return used


def _reason(e: Exception) -> str:
    """The line of a loading error that says what is wrong (torch's "size mismatch for
    ...", else the first line)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    telling = [line for line in lines if "mismatch" in line or "shape" in line]
    return (telling or lines or [type(e).__name__])[0][:300]


def _family(pipe) -> str:
    return "SDXL" if hasattr(pipe, "text_encoder_2") else "SD 1.5"


def file_hash(path: Path) -> str:
    """The first 12 hex digits of the file's SHA-256 (A1111's short hash for embeddings)."""
    return sha256_file(path)[:12]


# ---- LoRA: <lora:name:weight> from networks_dir()/lora ----

def lora_files() -> dict[str, Path]:
    """{name: file} of the LoRAs in ``networks_dir()/lora`` (or A1111's ``Lora``)."""
    return _network_files("lora", "Lora")


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:...>`` tag: the file's name, its text-encoder and UNet multipliers."""

    name: str
    te: float = 1.0
    unet: float = 1.0


# A1111's networks: "lora" (and its alias "lyco") pegu loads; "hypernet" it cannot
LORA_KINDS = ("lora", "lyco")


def lora_tags(text: str) -> tuple[list[LoraTag], list[str]]:
    """The LoRA tags of ``text`` and notes on the tags A1111 would skip.

    A1111's rule (extensions-builtin/Lora/extra_networks_lora.py): ``<lora:NAME:TE:UNET:DYN>``
    positionally, or ``te=``/``unet=``/``dyn=`` by name; TE defaults to 1, UNET to TE. Kinds
    are case-sensitive: ``<LoRA:x>`` is an unknown network, skipped with a note as A1111
    skips it; ``<hypernet:...>`` is an error (A1111 applies it, pegu cannot)."""
    tags, notes = [], []
    for kind, args in extra_networks(text)[1]:
        tag = f"<{kind}:{':'.join(args)}>"
        if kind == "hypernet":
            raise BadInput(f"{tag}: pegu loads LoRAs (<lora:NAME:WEIGHT>) but not A1111's "
                           "hypernetworks; remove the tag")
        if kind not in LORA_KINDS:
            notes.append(f"{tag}: A1111 skips unknown extra networks ({kind!r}; it knows "
                         "'lora' and 'hypernet', in lower case), and so does pegu")
            continue
        positional = [a for a in args if "=" not in a]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        try:
            te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
            unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
        except ValueError:
            raise BadInput(f"{tag}: the weights must be numbers, e.g. <lora:{args[0]}:0.8> "
                           f"or <lora:{args[0]}:0.8:0.5> (text encoder, UNet)") from None
        if not (math.isfinite(te) and math.isfinite(unet)):
            raise BadInput(f"{tag}: the weights must be finite numbers")
        if "dyn" in named or len(positional) > 3:
            notes.append(f"{tag}: pegu applies the LoRA at its full rank (A1111's dyn "
                         "dimension is not reproduced)")
        tags.append(LoraTag(positional[0] if positional else "", te, unet))
    return tags, notes


def apply_loras(pipe, tags: list[LoraTag],
                fixed: dict[str, float] | None = None) -> dict[str, float | list[float]]:
    """Activate exactly ``tags`` on ``pipe`` (text encoders at each tag's ``te``, UNet at its
    ``unet``), loading each file once, together with the ``fixed`` adapters already loaded
    {adapter: weight} (a distillation LoRA); nothing to activate turns every LoRA off.
    Returns {name: weight} (or [te, unet] where they differ); repeated tags add up, as in
    A1111."""
    fixed = fixed or {}
    loaded = set(pipe.get_list_adapters().get("unet", [])) if hasattr(
        pipe, "get_list_adapters") and getattr(pipe.unet, "peft_config", None) else set()
    if not tags and not fixed:
        if loaded:
            pipe.disable_lora()
        return {}
    files = lora_files() if tags else {}
    missing = [t.name for t in tags if t.name not in files]
    if missing:
        raise MissingFile(
            f"LoRA {', '.join(missing)} not found in {networks_dir() / 'lora'}: put "
            "NAME.safetensors there, or point $PEGU_NETWORKS at the folder that holds lora/")
    weights: dict[str, list[float]] = {}
    for t in tags:
        te, unet = weights.get(t.name, [0.0, 0.0])
        weights[t.name] = [te + t.te, unet + t.unet]
    adapters = {name: re.sub(r"\W", "_", name) for name in weights}
    for name, adapter in adapters.items():
        if adapter not in loaded:
            state = load_state_dict(files[name], "LoRA")
            try:
                with compat.quiet(), compat.diffusers_quiet(errors=True):
                    pipe.load_lora_weights(state, adapter_name=adapter)
            except PeguError:
                raise
            except (ValueError, KeyError, RuntimeError, TypeError, AttributeError,
                    IndexError) as e:
                raise BadInput(f"cannot use the LoRA {files[name]}: {_reason(e)}. Is it a "
                               f"LoRA for this model's family ({_family(pipe)})?") from None
    parts = pipe.get_list_adapters()

    def per_part(adapter: str, te: float, unet: float) -> dict:
        return {part: (unet if part in ("unet", "transformer") else te)
                for part, names in parts.items() if adapter in names}

    pipe.enable_lora()
    with compat.diffusers_quiet():
        pipe.set_adapters([*adapters.values(), *fixed],
                          [per_part(adapters[n], te, unet) for n, (te, unet) in weights.items()]
                          + [per_part(a, w, w) for a, w in fixed.items()])
    return {n: te if te == unet else [te, unet] for n, (te, unet) in weights.items()}
