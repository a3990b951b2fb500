"""The networks: the Real-ESRGAN family built by pegu (basicsr RRDBNet, SRVGGNetCompact,
waifu2x's UpConv7) with strict weight checks, any other upscaler through spandrel, and
RRDBNet's forward rewritten to run its upsampling tail in strips (bounded memory)."""
from __future__ import annotations

import math

from ..core import compat
from ..core.errors import BadInput, MissingPackage, WeightsError


def network_from(state: dict, stated: str | None, where: str):
    """(network, arch, kwargs, spandrel descriptor or None) for a state dict: the official
    family (basicsr RRDBNet, SRVGGNetCompact) when its keys are theirs, else whatever
    spandrel recognises (``stated="spandrel"`` goes there directly)."""
    family_error = None  # the official family's keys with something wrong in them
    if stated != "spandrel":
        try:
            arch, kwargs = detect_arch(state, stated=stated)
        except WeightsError:
            if stated is not None:
                raise
        else:
            try:
                return build(arch, kwargs, state, where), arch, kwargs, None
            except WeightsError as e:
                if stated is not None:
                    raise
                family_error = e
    try:
        desc = _spandrel(state, where)
    except WeightsError:
        if family_error is not None:
            raise family_error from None
        raise
    return desc.model, desc.architecture.id, {"scale": desc.scale}, desc


def _spandrel(state: dict, where: str):
    """spandrel's descriptor of a single-image RGB upscaler (or x1 restorer), or a
    WeightsError saying what the file is instead."""
    try:
        import spandrel
    except ImportError as e:
        raise MissingPackage(f"{where} is not a Real-ESRGAN-family file; loading other "
                             f"architectures needs spandrel ({e}): pip install spandrel") from None
    try:
        with compat.quiet():  # some architectures' modules warn when first imported
            desc = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except spandrel.UnsupportedModelError:
        raise WeightsError(f"{where}: neither the Real-ESRGAN family nor an architecture "
                           "spandrel knows (ESRGAN, Compact, SwinIR, HAT, DAT, ATD, SPAN, "
                           "OmniSR, RealPLKSR, ...): not an upscaler pegu can run") from None
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise WeightsError(f"{where}: spandrel could not build the network from these "
                           f"weights ({type(e).__name__}: {str(e)[:200]})") from None
    kind = getattr(desc, "purpose", "?")
    if not isinstance(desc, spandrel.ImageModelDescriptor) or kind not in ("SR", "Restoration"):
        raise WeightsError(f"{where} is a {desc.architecture.name} {kind} model; pegu "
                           "upscales with single-image super-resolution (or x1 restoration) "
                           "models")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise WeightsError(f"{where}: {desc.architecture.name} with {desc.input_channels} "
                           f"input and {desc.output_channels} output channels; pegu runs "
                           "RGB models (3 in, 3 out)")
    return desc.eval()


def spandrel_dtype(desc, asked, dt, dev, name: str):
    """The dtype a spandrel model runs in: fp16 only where it supports half, bf16 only
    where it supports bfloat16 (spandrel states both); "auto" falls back to bf16 or fp32."""
    import torch

    half, bf16 = desc.supports_half, desc.supports_bfloat16
    if dt == torch.float16 and not half:
        if asked != "auto":
            raise BadInput(f"{name} ({desc.architecture.name}) does not run in fp16 "
                             f"(spandrel); use dtype={'bf16' if bf16 else 'fp32'!r}")
        cuda_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 and cuda_bf16 else torch.float32
    if dt == torch.bfloat16 and not bf16:
        raise BadInput(f"{name} ({desc.architecture.name}) does not run in bf16 "
                         f"(spandrel); use dtype={'fp16' if half else 'fp32'!r}")
    return dt


def network(arch: str, kwargs: dict):
    if arch == "upconv7":
        return _upconv7()
    cls = compat.rrdbnet_class() if arch == "rrdb" else compat.srvggnet_class()
    return cls(**kwargs)


def _upconv7():
    """waifu2x's UpConv7 (2x): six unpadded 3x3 convolutions (16-32-64-128-128-256,
    LeakyReLU 0.1) and a 4x4 stride-2 transposed convolution; the input is first padded by
    7 px (replicated edges), so the output is exactly twice the input."""
    import torch.nn as nn
    import torch.nn.functional as F

    class UpConv7(nn.Module):
        scale = 2

        def __init__(self):
            super().__init__()
            chans = [3, 16, 32, 64, 128, 128, 256]
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3) for a, b in zip(chans, chans[1:]))
            self.up = nn.ConvTranspose2d(256, 3, 4, stride=2, padding=3)

        def forward(self, x):
            x = F.pad(x, (7, 7, 7, 7), mode="replicate")
            for conv in self.convs:
                x = F.leaky_relu(conv(x), 0.1)
            return self.up(x)

    return UpConv7()


def build(arch: str, kwargs: dict, state: dict, where: str):
    """The network with ``state`` loaded strictly (every key, every shape)."""
    model = network(arch, kwargs)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        detail = "; ".join(p for p in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {extra[:3]}" if extra else "",
            f"shape of {wrong[:3]}" if wrong else "") if p)
        raise WeightsError(f"{where} does not hold {arch} weights of this shape ({detail}); "
                           "pick the matching model name or architecture")
    model.load_state_dict(state, strict=True)
    return model


def detect_arch(state: dict, stated: str | None = None) -> tuple[str, dict]:
    """(arch, constructor kwargs) read from a state dict's keys and shapes."""
    if stated not in (None, "rrdb", "srvgg"):
        raise BadInput(f"arch must be 'rrdb' or 'srvgg', got {stated!r}")
    rrdb_keys = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight",
                 "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight")
    if all(k in state for k in rrdb_keys) and stated in (None, "rrdb"):
        first = state["conv_first.weight"]
        num_feat, in_ch = first.shape[0], first.shape[1]
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
        num_out = state["conv_last.weight"].shape[0]
        scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
        if scale is None:
            raise WeightsError(f"RRDBNet with {in_ch} input channels is not supported")
        grow = state["body.0.rdb1.conv1.weight"].shape[0]
        return "rrdb", dict(num_in_ch=3, num_out_ch=num_out, num_feat=num_feat,
                            num_block=len(blocks), num_grow_ch=grow, scale=scale)
    if "body.0.weight" in state and state["body.0.weight"].ndim == 4 \
            and stated in (None, "srvgg"):
        convs = sorted(int(k.split(".")[1]) for k, v in state.items()
                       if k.startswith("body.") and k.endswith(".weight") and v.ndim == 4)
        first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
        in_ch = first.shape[1]
        up = math.isqrt(last.shape[0] // in_ch)
        if "body.1.weight" not in state:
            raise WeightsError("SRVGGNetCompact without PReLU weights is not supported")
        return "srvgg", dict(num_in_ch=in_ch, num_out_ch=in_ch, num_feat=first.shape[0],
                             num_conv=len(convs) - 2, upscale=up, act_type="prelu")
    raise WeightsError(
        "these weights are neither basicsr RRDBNet (conv_first.*, body.N.rdbK.*) nor "
        "SRVGGNetCompact (body.N.*)" + (f" as stated (arch={stated!r})" if stated else "")
        + "; pegu loads the Real-ESRGAN family")


STRIP_BYTES = 32 << 20  # one 64-channel activation of an RRDB tail strip, at most


def is_rrdb(model) -> bool:
    return isinstance(model, compat.rrdbnet_class())


def rrdb_in_strips(net, x):
    """basicsr's ``RRDBNet.forward``, with the upsampling tail (2x and 4x resolution, where
    ~0.9 GiB of a 256-px tile's activations live) run over row strips of at most
    STRIP_BYTES per activation. Each strip reads 2 rows (8 output rows) of neighbours on each
    side, more than its four 3x3 convolutions see, so the result equals the whole pass."""
    import torch
    import torch.nn.functional as F

    feat = x if net.scale == 4 else F.pixel_unshuffle(x, {2: 2, 1: 4}[net.scale])
    feat = net.conv_first(feat)
    feat = feat + net.conv_body(net.body(feat))
    n, c, h, w = feat.shape
    halo, out = 2, []
    rows = max(1, STRIP_BYTES // (n * c * 16 * w * feat.element_size()) - 2 * halo)
    if rows >= h:
        return _rrdb_tail(net, feat)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - halo), min(h, r1 + halo)
        y = _rrdb_tail(net, feat[:, :, a:b])
        out.append(y[:, :, 4 * (r0 - a):4 * (r1 - a)])
    return torch.cat(out, dim=2)


def _rrdb_tail(net, feat):
    import torch.nn.functional as F

    feat = net.lrelu(net.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = net.lrelu(net.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
    return net.conv_last(net.lrelu(net.conv_hr(feat)))
