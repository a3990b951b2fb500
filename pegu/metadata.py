"""PNG text chunks in, settings out.

Two chunks: ``parameters`` in AUTOMATIC1111's format (its PNG Info tab and Civitai read it)
and ``pegu``: JSON with the full RunSettings, the timings and the package versions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .settings import GenerateSettings, RunSettings, UpscaleSettings, sampler_name

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
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from e
    pegu = text.get("pegu")
    return {"parameters": text.get("parameters"), "pegu": json.loads(pegu) if pegu else None}


def read_settings(path) -> RunSettings:
    """The RunSettings an image was made with: pegu's own chunk, or (for an image from
    AUTOMATIC1111) what its ``parameters`` say. Running them again remakes the image."""
    record = read_record(path)
    if record["pegu"] is not None:
        return RunSettings.from_dict(record["pegu"]["settings"])
    if record["parameters"]:
        return _from_a1111(parse_parameters(record["parameters"]))
    raise ValueError(f"{path} carries no generation settings (no 'pegu' or 'parameters' "
                     "text chunk)")


def _from_a1111(p: dict) -> RunSettings:
    """Best-effort RunSettings from A1111 parameters."""
    w, h = (int(v) for v in p.get("Size", "512x512").split("x"))
    sampler = sampler_name(p.get("Sampler", "DPM++ 2M Karras"), p.get("Schedule type"))
    g = GenerateSettings(prompt=p["Prompt"], negative_prompt=p.get("Negative prompt", ""),
                         width=w, height=h, steps=int(p.get("Steps", 25)),
                         guidance=float(p.get("CFG scale", 7)), scheduler=sampler,
                         seed=int(p.get("Seed", 0)))
    target = p.get("Postprocess upscale to") or p.get("Hires resize") or f"{4 * w}x{4 * h}"
    tw, th = (int(v) for v in target.split("x"))
    refine = p.get("Denoising strength")
    return RunSettings(generate=g, model=p.get("Model", "realistic-vision-v6"),
                       upscale=UpscaleSettings(p.get("Postprocess upscaler")
                                               or p.get("Hires upscaler") or "RealESRGAN_x4plus"),
                       target=(tw, th), refine=float(refine) if refine else None)
