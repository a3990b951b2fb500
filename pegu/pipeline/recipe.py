"""PNG text chunks in, settings out.

Two chunks: ``parameters`` in AUTOMATIC1111's format (its PNG Info tab and Civitai read it)
and ``pegu``: JSON with the full RunSettings, the timings and the package versions.
"""
from __future__ import annotations

import json
import platform
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..core.errors import BadInput, MissingFile
from ..core.registry import generator_by_hash, generator_spec, upscaler_spec
from ..core.settings import GenerateSettings, RunSettings, UpscaleSettings, sampler_name
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
    fields = {"Steps": g.steps, "Sampler": g.scheduler, "CFG scale": f"{g.guidance:g}",
              "Seed": g.seed, "Size": f"{g.width}x{g.height}", "Model": settings.model}
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


def parse_parameters(text: str) -> dict:
    """AUTOMATIC1111's ``parameters`` text -> {"Prompt", "Negative prompt", key: value}."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # no parameter line: all of it is the prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
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
    except (UnidentifiedImageError, OSError) as e:
        raise BadInput(f"{path} is not a readable image ({e})") from e
    pegu = text.get("pegu")
    if pegu:
        try:
            pegu = json.loads(pegu)
        except ValueError:
            pegu = None
        if not isinstance(pegu, dict) or not isinstance(pegu.get("settings"), dict):
            raise BadInput(f"{path}: its 'pegu' text chunk is not pegu's record (JSON with "
                             "the settings); the image was edited or made by another tool")
    return {"parameters": text.get("parameters"), "pegu": pegu or None}


def read_settings(path) -> RunSettings:
    """The RunSettings an image was made with: pegu's own chunk, or (for an image from
    AUTOMATIC1111) what its ``parameters`` say. Running them again remakes the image."""
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
        return _from_a1111(parse_parameters(record["parameters"]))
    raise BadInput(f"{path} carries no generation settings (no 'pegu' or 'parameters' "
                     "text chunk)")


# A1111 infotext fields that change the image and that pegu cannot (yet) reproduce; each is
# named in one warning when an A1111 PNG is read (fields from A1111's modules/processing.py)
_UNMAPPED = ("Clip skip", "ENSD", "Eta", "Variation seed", "Variation seed strength",
             "Seed resize from", "Face restoration", "VAE",
             "Hires sampler", "Hires schedule type", "Hires prompt", "Hires negative prompt",
             "Hires CFG Scale", "Hires checkpoint", "Refiner", "RNG", "Emphasis", "Noise multiplier")
_DEFAULTS = {"Clip skip": "1", "RNG": "CPU", "Emphasis": "Original", "ENSD": "0", "Eta": "1"}
_HIRES = ("Hires upscale", "Hires resize", "Hires steps", "Hires upscaler")


def _size(text: str, what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInput(f"{what} {text!r} is not WIDTHxHEIGHT") from None
    return w, h


def _from_a1111(p: dict) -> RunSettings:
    """RunSettings from A1111 parameters: prompts read A1111's way, sampler and schedule,
    the model by name, and the hires fix as pegu's refine; what pegu cannot map is named in
    one warning."""
    _check_embeddings(p.get("TI hashes"))
    ignored = [f"{k}: {p[k]}" for k in _UNMAPPED
               if k in p and p[k] != _DEFAULTS.get(k) and not (k == "Emphasis" and p[k] == "None")]
    w, h = _size(p.get("Size", "512x512"), "Size")
    steps = int(p.get("Steps", 20))
    sampler = sampler_name(p.get("Sampler", "DPM++ 2M Karras"), p.get("Schedule type"))
    g = GenerateSettings(prompt=p["Prompt"], negative_prompt=p.get("Negative prompt", ""),
                         width=w, height=h, steps=steps, guidance=float(p.get("CFG scale", 7)),
                         scheduler=sampler, seed=int(p.get("Seed", 0)),
                         prompt_syntax="plain" if p.get("Emphasis") == "None" else "a1111",
                         distill=p.get("Distill"),
                         deepcache=int(p["DeepCache"]) if p.get("DeepCache") else None,
                         deepcache_branch=int(p.get("DeepCache branch", 0)),
                         tome=float(p["ToMe"]) if p.get("ToMe") else None,
                         compile=p.get("Compile"))
    model = p.get("Model", "realistic-vision-v6")
    try:
        model = generator_spec(model).name
    except BadInput:  # by the file's hash, else kept as written (--model NAME picks one)
        by_hash = generator_by_hash(p.get("Model hash", ""))
        model = by_hash.name if by_hash else model
    refine = refine_steps = refine_size = None
    upscaler = p.get("Postprocess upscaler") or "RealESRGAN_x4plus"
    target = None
    strength = p.get("Denoising strength")
    if strength is not None and any(k in p for k in _HIRES):  # txt2img hires fix
        refine = float(strength)
        if "Hires resize" in p:
            hw, hh = _size(p["Hires resize"], "Hires resize")
        else:  # A1111: int(width * scale), int(height * scale)
            scale = float(p.get("Hires upscale", 2))
            hw, hh = int(w * scale), int(h * scale)
        hw, hh = (8 * max(8, round(v / 8)) for v in (hw, hh))
        refine_size, target = max(hw, hh), (hw, hh)
        hires_steps = int(p.get("Hires steps", 0) or 0)
        # A1111 runs "Hires steps" as given; 0 means int(strength * steps) (img2img default)
        refine_steps = hires_steps or max(1, int(min(refine, 0.999) * steps))
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
    if ignored:
        warnings.warn("pegu cannot reproduce these A1111 settings and ignores them: "
                      + "; ".join(ignored), stacklevel=3)
    return RunSettings(generate=g, model=model, upscale=UpscaleSettings(upscaler),
                       target=target or (4 * w, 4 * h), refine=refine,
                       refine_steps=refine_steps, refine_size=refine_size)


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
