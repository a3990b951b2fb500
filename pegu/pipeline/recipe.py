"""PNG text chunks in, settings out.

Two chunks: ``parameters`` in AUTOMATIC1111's format (its PNG Info tab and Civitai read it)
and ``pegu``: JSON with the full RunSettings, the timings and the package versions.
"""
from __future__ import annotations

import json
import math
import platform
import secrets
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..core.errors import BadInput, MissingFile
from ..core.registry import (GENERATORS, did_you_mean, generator_by_hash, generator_spec,
                             upscaler_spec)
from ..core.settings import (MAX_SIDE, GenerateSettings, RunSettings, UpscaleSettings,
                             sampler_name)
from ..generate.prompts import embedding_files, file_hash, networks_dir

# A1111's own pattern (modules/infotext_utils.py): key: value, or key: "json string"
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _quote(text) -> str:
    """A1111's quoting: values holding ',', ':' or newlines become JSON strings."""
    text = str(text)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def a1111_parameters(settings: RunSettings, extra: dict | None = None) -> str:
    """The ``parameters`` text: prompt, ``Negative prompt:`` line, then ``key: value``s."""
    g = settings.generate
    fields = {"Steps": g.steps, "Sampler": g.scheduler,
              **({"Schedule type": g.schedule} if g.schedule else {}),
              "CFG scale": f"{g.guidance:g}", "Seed": g.seed, "Size": f"{g.width}x{g.height}", "Model": settings.model}
    if settings.mode == "direct":
        fields["Size"] = f"{settings.target[0]}x{settings.target[1]}"
    else:
        if settings.refine is not None:
            fields.update({"Denoising strength": f"{settings.refine:g}",
                           "Hires resize": extra.get("refine_size", "") if extra else "",
                           "Hires steps": settings.refine_steps or g.steps,
                           "Hires upscaler": settings.upscale.model})
        fields.update({"Postprocess upscaler": settings.upscale.model,
                       "Postprocess upscale to": f"{settings.target[0]}x{settings.target[1]}"})
    if g.prompt_syntax == "plain":  # A1111's name for reading brackets as text
        fields["Emphasis"] = "None"
    if g.clip_skip != 1:
        fields["Clip skip"] = g.clip_skip
    if g.pad_prompts:
        fields["Pad conds"] = "True"
    # pegu's speed settings, under names of its own (A1111 keeps fields it does not know)
    fields.update({k: v for k, v in (("Distill", g.distill), ("DeepCache", g.deepcache),
                                     ("DeepCache branch", g.deepcache_branch
                                      if g.deepcache else None),
                                     ("ToMe", g.tome), ("Compile", g.compile)) if v is not None})
    fields.update(extra.get("a1111", {}) if extra else {})
    text = g.prompt
    if g.negative_prompt:
        text += f"\nNegative prompt: {g.negative_prompt}"
    return text + "\n" + ", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v != "")


_SPACE = re.compile(r"\s*")
_KEY_RUN = re.compile(r"[\w \-/]*")
_WORD = re.compile(r"\w")


def _params(line: str) -> list[tuple[str, str]]:
    r"""``_PARAM.findall(line)``, in time linear in the line.

    findall retries the pattern at every position, and ``\w[\w \-/]+:`` scans each run of
    key characters to its end: quadratic on a long line without colons (a 100 kB prompt
    line took minutes). A match can only start where the run of key characters that
    follows (after spaces) ends in ':', so every other start in that run is skipped: the
    same matches, each character looked at a bounded number of times."""
    found, pos, n = [], 0, len(line)
    while pos < n:
        start = _SPACE.match(line, pos).end()
        if start >= n or not _WORD.match(line, start):
            pos = start + 1 if start > pos else pos + 1
            continue
        end = _KEY_RUN.match(line, start + 1).end()
        if end == start + 1 or end >= n or line[end] != ":":
            pos = end  # no key ends here; a later match starts at or after ``end``
            continue
        m = _PARAM.match(line, pos)
        if m is None:
            pos += 1
            continue
        found.append(m.groups())
        pos = m.end() if m.end() > pos else pos + 1
    return found


def parse_parameters(text: str) -> dict:
    """AUTOMATIC1111's ``parameters`` text -> {"Prompt", "Negative prompt", key: value}."""
    *lines, last = text.strip().split("\n")
    if len(_params(last)) < 3:  # no parameter line: all of it is the prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _params(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        out[key.strip()] = value
    return out


def pnginfo(settings: RunSettings, record: dict, parameters: str):
    """A PngInfo with the two chunks (international text, so any prompt survives)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("parameters", parameters)
    info.add_itxt("pegu", json.dumps({"settings": settings.to_dict(), **record},
                                     ensure_ascii=False))
    return info


def read_record(path) -> dict:
    """Both chunks of an image: {"parameters": str | None, "pegu": dict | None}."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except Image.DecompressionBombError as e:  # a header claiming a gigantic image
        raise BadInput(f"{path} claims a size too large to read safely ({e}); it is not an "
                       "image pegu made") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # ValueError: a text chunk over PIL's limit ("Decompressed Data Too Large")
        raise BadInput(f"{path} is not a readable image ({e})") from None
    pegu = text.get("pegu")
    if pegu:
        try:
            pegu = json.loads(pegu)
        except ValueError:
            pegu = None
        if not isinstance(pegu, dict) or not isinstance(pegu.get("settings"), dict) \
                or not _record_shaped(pegu):
            raise BadInput(f"{path}: its 'pegu' text chunk is not pegu's record (JSON with "
                             "the settings); the image was edited or made by another tool")
    return {"parameters": text.get("parameters"), "pegu": pegu or None}


def _record_shaped(record: dict) -> bool:
    """Whether the parts of pegu's record that ``pegu info`` prints have their shapes:
    ``stages`` a list of {stage: text, seconds: number, peak_bytes: number}, ``versions``
    a {name: text} mapping."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    stages, versions = record.get("stages", []), record.get("versions", {})
    return isinstance(stages, list) and all(
        isinstance(s, dict) and isinstance(s.get("stage"), str) and number(s.get("seconds"))
        and number(s.get("peak_bytes")) for s in stages) and isinstance(versions, dict)


def read_settings(path, model: str | None = None) -> RunSettings:
    """The RunSettings an image was made with: pegu's own chunk, or (for an image from
    AUTOMATIC1111) what its ``parameters`` say. Running them again remakes the image.
    model: the model to use for an A1111 image instead of the one it names."""
    record = read_record(path)
    if record["pegu"] is not None:
        settings = dict(record["pegu"]["settings"])
        try:
            # written before prompt_syntax existed: the prompt was read as plain text
            settings["generate"] = {"prompt_syntax": "plain", **settings["generate"]}
            return RunSettings.from_dict(settings)
        except (TypeError, KeyError, ValueError) as e:
            raise BadInput(f"{path}: the settings in its 'pegu' chunk are not valid ({e})") \
                from None
    if record["parameters"]:
        return _from_a1111(parse_parameters(record["parameters"]), model)
    raise BadInput(f"{path} carries no generation settings (no 'pegu' or 'parameters' "
                     "text chunk)")


# A1111 infotext fields that change the image and that pegu cannot (yet) reproduce; each is
# named in one warning when an A1111 PNG is read (fields from A1111's modules/processing.py)
_UNMAPPED = ("ENSD", "Eta", "Variation seed", "Variation seed strength",
             "Seed resize from", "Face restoration", "VAE",
             "Hires sampler", "Hires schedule type", "Hires prompt", "Hires negative prompt",
             "Hires CFG Scale", "Hires checkpoint", "Refiner", "RNG", "Emphasis", "Noise multiplier",
             # A1111's schedule options away from their defaults (sd_samplers_kdiffusion.py)
             "Schedule max sigma", "Schedule min sigma", "Schedule rho", "Beta schedule alpha",
             "Beta schedule beta", "Discard penultimate sigma", "SGM noise multiplier")
_DEFAULTS = {"RNG": "CPU", "Emphasis": "Original", "ENSD": "0", "Eta": "1",
             "Beta schedule alpha": "0.6", "Beta schedule beta": "0.6"}
_HIRES = ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler")


def _size(text: str, what: str, zero: bool = False) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInput(f"{what} {text!r} is not WIDTHxHEIGHT") from None
    if not (0 if zero else 1) <= min(w, h) or max(w, h) > MAX_SIDE:
        raise BadInput(f"{what} {text!r}: each side must be 1 to {MAX_SIDE} pixels")
    return w, h


def _number(p: dict, key: str, default, kind=float):
    """The field ``key`` as a finite number (``default`` when absent)."""
    text = p.get(key)
    if text in (None, ""):
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BadInput(f"the image's {key} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise BadInput(f"the image's {key} {text!r} is not a finite number")
    return value


def hires_size(width: int, height: int, p: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the size A1111's hires pass denoises at, the final size) for a first pass of
    ``width``×``height`` (modules/processing.py, ``calculate_target_resolution``):
    ``Hires upscale`` scales each side (int), ``Hires resize`` W×H with a 0 keeps the aspect
    ratio, both set covers then crops; the latent floors each side to a multiple of 8."""
    if p.get("Hires resize"):
        rx, ry = _size(p["Hires resize"], "Hires resize", zero=True)
    else:
        rx = ry = 0
    if rx == 0 and ry == 0:
        scale = _number(p, "Hires upscale", 2.0)
        if not 0 < scale <= 16:
            raise BadInput(f"the image's Hires upscale {scale} is outside (0, 16]")
        x, y = int(width * scale), int(height * scale)
        final = None
    elif ry == 0:
        x, y, final = rx, rx * height // width, None
    elif rx == 0:
        x, y, final = ry * width // height, ry, None
    else:
        if width / height < rx / ry:
            x, y = rx, rx * height // width
        else:
            x, y = ry * width // height, ry
        final = (rx, ry)
    x, y = (max(8, v // 8 * 8) for v in (x, y))
    return (x, y), final or (x, y)


def _old_first_pass(p: dict, w: int, h: int) -> tuple[int, int, dict]:
    """A1111's ``restore_old_hires_fix_params``: the 2022 format's ``First pass size`` is
    the txt2img size and ``Size`` the hires one (0x0: A1111's old automatic first pass)."""
    fw, fh = _size(p["First pass size"], "First pass size", zero=True)
    if fw == 0 or fh == 0:
        k = math.sqrt(512 * 512 / (w * h))
        fw, fh = math.ceil(k * w / 64) * 64, math.ceil(k * h / 64) * 64
    return fw, fh, dict(p, **{"Hires resize": f"{w}x{h}"})


def _model(p: dict, override: str | None) -> str:
    """The registry name of the image's model: by its name (A1111 writes the checkpoint's
    file stem), else its hash; anything else is refused with the closest known names."""
    if override:
        return override
    name, short = p.get("Model"), p.get("Model hash", "")
    if name:
        try:
            return generator_spec(name).name
        except BadInput:
            pass
    by_hash = generator_by_hash(short)
    if by_hash:
        return by_hash.name
    known = [n for s in GENERATORS.values() if not s.tiny for n in (s.name, *s.aliases)]
    hint = did_you_mean(name or "", known, cutoff=0.3) if name else ""
    what = f"model {name!r}" + (f" (hash {short})" if short else "") if name else (
        f"model hash {short!r}" if short else "no model")
    raise BadInput(f"the image names {what}, which is none pegu knows.{hint} Re-run it with "
                   "--model NAME (`pegu models` lists them; a Hub id, folder or "
                   ".safetensors file works too)")


def _from_a1111(p: dict, model: str | None = None) -> RunSettings:
    """RunSettings from A1111 parameters: prompts read A1111's way, sampler and schedule,
    the model by name or hash (``model`` overrides it), and the hires fix as pegu's refine
    with A1111's sizes and steps; what pegu cannot map is named in one warning."""
    _check_embeddings(p.get("TI hashes"))
    ignored = [f"{k}: {p[k]}" for k in _UNMAPPED
               if k in p and p[k] != _DEFAULTS.get(k) and not (k == "Emphasis" and p[k] == "None")]
    notes = []
    w, h = _size(p.get("Size", "512x512"), "Size")
    if p.get("First pass size") and p.get("Denoising strength") is not None:
        w, h, p = _old_first_pass(p, w, h)
    steps = _number(p, "Steps", 20, int)
    sampler, schedule = sampler_name(p.get("Sampler", "DPM++ 2M Karras"), p.get("Schedule type"))
    seed = _number(p, "Seed", None, int)
    if seed is None or seed < 0:  # A1111's -1: drawn
        seed = secrets.randbelow(2**32)
        notes.append(f"the image records no seed; pegu drew {seed} (saved with the image)")
    g = GenerateSettings(prompt=p["Prompt"], negative_prompt=p.get("Negative prompt", ""),
                         width=w, height=h, steps=steps, guidance=_number(p, "CFG scale", 7.0),
                         scheduler=sampler, schedule=schedule, seed=seed,
                         prompt_syntax="plain" if p.get("Emphasis") == "None" else "a1111",
                         distill=p.get("Distill"),
                         deepcache=int(p["DeepCache"]) if p.get("DeepCache") else None,
                         deepcache_branch=int(p.get("DeepCache branch", 0)),
                         tome=float(p["ToMe"]) if p.get("ToMe") else None,
                         compile=p.get("Compile"),
                         clip_skip=_number(p, "Clip skip", 1, int),
                         pad_prompts=p.get("Pad conds", "").lower() == "true")
    refine = refine_steps = refine_size = None
    upscaler = p.get("Postprocess upscaler") or "RealESRGAN_x4plus"
    target = None
    strength = p.get("Denoising strength")
    if strength is not None and any(k in p for k in _HIRES):  # txt2img hires fix
        refine = _number(p, "Denoising strength", None)
        refine_size, target = hires_size(w, h, p)
        if target != refine_size:
            notes.append(f"A1111 crops the {refine_size[0]}x{refine_size[1]} hires latent to "
                         f"{target[0]}x{target[1]} before its second pass; pegu refines "
                         "uncropped and crops the result")
        # A1111 runs "Hires steps" steps, or as many as the first pass when it is 0 or absent
        refine_steps = _number(p, "Hires steps", 0, int) or steps
        name = p.get("Hires upscaler", "Latent")
        try:
            upscaler = upscaler_spec(name).name
        except BadInput:
            ignored.append(f"Hires upscaler: {name} (pegu refines a Real-ESRGAN upscale; "
                           f"it uses {upscaler})")
    elif strength is not None:
        ignored.append(f"Denoising strength: {strength} (an img2img image; pegu re-runs it "
                       "as text-to-image)")
    if p.get("Postprocess upscale to"):
        target = _size(p["Postprocess upscale to"], "Postprocess upscale to")
    resolved = _model(p, model)
    if ignored:
        warnings.warn("pegu cannot reproduce these A1111 settings and ignores them: "
                      + "; ".join(ignored), stacklevel=3)
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return RunSettings(generate=g, model=resolved, upscale=UpscaleSettings(upscaler),
                       target=target or (4 * w, 4 * h), refine=refine,
                       refine_steps=refine_steps, refine_size=refine_size,
                       fit="cover" if refine_size and target != refine_size else None)


def _check_embeddings(field: str | None) -> None:
    """A1111's ``TI hashes: name: hash, ...``: each embedding must be in pegu's embeddings
    folder (a different file under the same name is only warned about)."""
    if not field:
        return
    have = embedding_files()
    wanted = dict(part.rsplit(":", 1) for part in field.split(",") if ":" in part)
    wanted = {k.strip(): v.strip() for k, v in wanted.items()}
    missing = [n for n in wanted if n not in have]
    if missing:
        raise MissingFile(
            f"the image used textual-inversion embeddings {', '.join(missing)}, which are not "
            f"in {networks_dir() / 'embeddings'}: put the files there (NAME.safetensors, .pt "
            "or .bin) or point $PEGU_NETWORKS at the folder that holds embeddings/")
    for name, short in wanted.items():
        ours = file_hash(have[name]) if short else ""
        if ours[:len(short)] != short:
            warnings.warn(f"the embedding {have[name]} is not the file the image used (hash "
                          f"{ours}, the image says {short})", stacklevel=4)


def versions() -> dict:
    """Python's and the main packages' versions, recorded with every image."""
    out = {"python": platform.python_version()}
    for name in ("pegu", "torch", "diffusers", "transformers", "basicsr", "realesrgan"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
