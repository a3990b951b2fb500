"""The only place that works around third-party breakage (old basicsr, setuptools without
pkg_resources, transformers 4 against 5, diffusers' renamed arguments)."""
from __future__ import annotations

import contextlib
import logging
import sys
import types
import warnings


def _shim_functional_tensor() -> None:
    """basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, removed in
    torchvision 0.17; register the one name it uses from its new home."""
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision)
    except ImportError:
        from torchvision.transforms import functional

        shim = types.ModuleType(name)
        shim.rgb_to_grayscale = functional.rgb_to_grayscale
        sys.modules[name] = shim


def _shim_distutils() -> None:
    """basicsr 1.4.2 imports ``distutils.version.LooseVersion``; distutils left the standard
    library in Python 3.12 (setuptools often stands in): provide that one name if nothing
    else does."""
    try:
        import distutils.version  # noqa: F401
        return
    except ImportError:
        pass
    import functools

    from packaging.version import parse

    @functools.total_ordering
    class LooseVersion:
        def __init__(self, v):
            self.v = v.v if isinstance(v, LooseVersion) else parse(str(v))

        def __eq__(self, other):
            return self.v == LooseVersion(other).v

        def __lt__(self, other):
            return self.v < LooseVersion(other).v

    package, version = types.ModuleType("distutils"), types.ModuleType("distutils.version")
    version.LooseVersion = LooseVersion
    package.version = version
    sys.modules["distutils"], sys.modules["distutils.version"] = package, version


def _shims() -> None:
    _shim_functional_tensor()
    _shim_distutils()


def rrdbnet_class():
    """basicsr's ``RRDBNet`` (Real-ESRGAN x4plus, x2plus, anime_6B)."""
    _shims()
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet


def srvggnet_class():
    """realesrgan's ``SRVGGNetCompact`` (realesr-general-x4v3, animevideov3)."""
    _shims()
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return SRVGGNetCompact


def realesrganer_class():
    """realesrgan's own ``RealESRGANer`` (the reference pegu is checked against)."""
    _shims()
    from realesrgan import RealESRGANer

    return RealESRGANer


# Third-party messages a pegu user did not ask for and cannot act on (each with its source):
# diffusers' Kolors text encoder, torchsde and spandrel's GFPGAN/CodeFormer use
# @torch.jit.script, which torch >= 2.10 warns about when they are imported; spandrel's
# window-attention architectures (SwinIR, HAT, DAT) call torch.meshgrid without `indexing`,
# and some build zero-element layers; bitsandbytes (imported by diffusers' quantizers) logs a
# warning on CPUs with AVX-512 BF16 when it cannot fetch a kernel from the Hub
# (bitsandbytes/backends/cpu/ops.py), which offline it never can.
_NOISE = ((r".*`torch\.jit\.script` is deprecated.*", FutureWarning),
          (r"torch\.meshgrid: in an upcoming release.*", UserWarning),
          (r"Initializing zero-element tensors is a no-op", UserWarning),
          # peft, on a second adapter (a distillation LoRA beside the user's LoRAs)
          (r"Already found a `peft_config` attribute", UserWarning))
_NOISY_LOGGERS = ("bitsandbytes",)


@contextlib.contextmanager
def quiet():
    """Within the block, the third-party messages above are not shown; every setting is as
    it was afterwards."""
    loggers = [(logging.getLogger(n), logging.getLogger(n).level) for n in _NOISY_LOGGERS]
    for logger, _ in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for message, category in _NOISE:
                warnings.filterwarnings("ignore", message=message, category=category)
            yield
    finally:
        for logger, level in loggers:
            logger.setLevel(level)


@contextlib.contextmanager
def diffusers_quiet(errors: bool = False):
    """diffusers' own log messages below errors within the block (a scheduler told of a
    model option it has no use for, a LoRA with no text-encoder part); with ``errors``
    its error messages too (a failed LoRA load logs what it then raises, which pegu
    reports in its own words); as before after."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity(diffusers_logging.CRITICAL if errors else
                                    diffusers_logging.ERROR)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(level)


@contextlib.contextmanager
def quiet_loading():
    """Loading or saving models quietly (:func:`quiet`): with ``torch_dtype=``, which every
    diffusers release since 0.30 takes (recent ones also take ``dtype=`` and warn that the
    old name is deprecated: that warning is hidden), and without diffusers' and
    transformers' progress bars ("Loading pipeline components", "Loading weights", "Writing
    model shards"), which the user did not ask for. Both libraries' settings are as they
    were afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars = [(m, m.is_progress_bar_enabled()) for m in (diffusers_logging, transformers_logging)]
    for m, _ in bars:
        m.disable_progress_bar()
    try:
        with quiet(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            yield
    finally:
        for m, was in bars:
            if was:
                m.enable_progress_bar()


def pyiqa_module():
    """pyiqa, importable where setuptools >= 81 has dropped ``pkg_resources``: the
    openai-clip package behind CLIP-IQA does ``from pkg_resources import packaging`` for
    one version check; give it that one name (and nothing else) if nothing else does."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        shim = types.ModuleType("pkg_resources")
        shim.packaging = packaging
        sys.modules["pkg_resources"] = shim
    import pyiqa

    return pyiqa


def clip_features(out):
    """CLIP's image/text features: transformers 4 returns the projected tensor, 5 wraps it
    in an output object (``pooler_output``)."""
    return out if hasattr(out, "shape") else out.pooler_output
