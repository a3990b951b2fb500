"""The ncnn engine: any Real-ESRGAN-family state dict written as an ncnn network and run
by the ``ncnn`` package (``pip install ncnn``) on the CPU in fp32.

ncnn runs 3×3 convolutions with Winograd transforms, which need about a quarter of the
multiplications of a direct convolution; PyTorch's oneDNN convolutions are direct. Its
output equals PyTorch's fp32 output within float rounding (checked in the tests).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import BadInput, MissingPackage, PeguError


class _Graph:
    """Layers in forward order; Split layers are added where a blob has several readers."""

    def __init__(self):
        self.layers: list[tuple[str, list[str], str, str]] = []  # type, inputs, output, params
        self.weights: list[np.ndarray] = []
        self._n = 0

    def add(self, kind: str, inputs: list[str], params: str = "") -> str:
        self._n += 1
        out = f"b{self._n}"
        self.layers.append((kind, list(inputs), out, params))
        return out

    def conv(self, x: str, state: dict, key: str, leaky: bool = False) -> str:
        w = state[f"{key}.weight"].float().numpy()
        b = state[f"{key}.bias"].float().numpy()
        co, _, k, _ = w.shape
        self.weights += [np.zeros(1, "<u4"), w.astype("<f4"), b.astype("<f4")]  # 0: fp32
        act = " 9=2 -23310=1,2.000000e-01" if leaky else ""
        return self.add("Convolution", [x], f"0={co} 1={k} 4={k // 2} 5=1 6={w.size}{act}")

    def param_text(self) -> str:
        readers: dict[str, int] = {}
        for _, inputs, _, _ in self.layers:
            for b in inputs:
                readers[b] = readers.get(b, 0) + 1
        lines, taken, blobs = [], {}, 0
        for i, (kind, inputs, out, params) in enumerate(self.layers):
            names = []
            for b in inputs:  # the k-th reader of a split blob reads its k-th copy
                if readers[b] > 1:
                    names.append(f"{b}_{taken.get(b, 0)}")
                    taken[b] = taken.get(b, 0) + 1
                else:
                    names.append(b)
            lines.append(f"{kind} l{i} {len(names)} 1 {' '.join(names + [out])} {params}".strip())
            blobs += 1
            if readers.get(out, 0) > 1:
                copies = [f"{out}_{k}" for k in range(readers[out])]
                lines.append(f"Split s{i} 1 {len(copies)} {out} {' '.join(copies)}")
                blobs += len(copies)
        head = ["7767517", f"{len(lines)} {blobs}"]
        return "\n".join(head + lines) + "\n"


def export(arch: str, kwargs: dict, state: dict) -> tuple[str, bytes]:
    """(ncnn .param text, .bin bytes) of an "rrdb" or "srvgg" network. The input blob is
    ``data``; x2plus/x1 RRDB nets take their input already pixel-unshuffled."""
    g = _Graph()
    g.layers.append(("Input", [], "data", ""))
    if arch == "rrdb":
        feat = g.conv("data", state, "conv_first")
        x = feat
        for i in range(kwargs["num_block"]):
            trunk = x
            for r in (1, 2, 3):
                key, parts = f"body.{i}.rdb{r}", [x]
                for c in range(1, 5):
                    inp = parts[0] if c == 1 else g.add("Concat", parts)
                    parts.append(g.conv(inp, state, f"{key}.conv{c}", leaky=True))
                x5 = g.conv(g.add("Concat", parts), state, f"{key}.conv5")
                x = g.add("Eltwise", [x5, x], "0=1 -23301=2,2.000000e-01,1.000000e+00")
            x = g.add("Eltwise", [x, trunk], "0=1 -23301=2,2.000000e-01,1.000000e+00")
        x = g.add("BinaryOp", [feat, g.conv(x, state, "conv_body")], "0=0")
        for key in ("conv_up1", "conv_up2"):
            x = g.add("Interp", [x], "0=1 1=2.000000e+00 2=2.000000e+00")
            x = g.conv(x, state, key, leaky=True)
        g.conv(g.conv(x, state, "conv_hr", leaky=True), state, "conv_last")
    elif arch == "srvgg":
        x = "data"
        convs = sorted(int(k.split(".")[1]) for k, v in state.items()
                       if k.startswith("body.") and k.endswith(".weight") and v.ndim == 4)
        for n in convs:
            x = g.conv(x, state, f"body.{n}")
            if n != convs[-1]:
                slope = state[f"body.{n + 1}.weight"].float().numpy().astype("<f4")
                g.weights.append(slope)
                x = g.add("PReLU", [x], f"0={slope.size}")
        up = kwargs["upscale"]
        x = g.add("PixelShuffle", [x], f"0={up}")
        base = g.add("Interp", ["data"], f"0=1 1={up:.6e} 2={up:.6e}")
        g.add("BinaryOp", [x, base], "0=0")
    else:
        raise BadInput(f"no ncnn export for arch {arch!r}")
    return g.param_text(), b"".join(w.tobytes() for w in g.weights)


class NcnnNet:
    """An exported network loaded into ncnn; call it on (C, H, W) float32 arrays."""

    def __init__(self, arch: str, kwargs: dict, state: dict, threads: int):
        try:
            import ncnn
        except ImportError:
            raise MissingPackage("engine='ncnn' needs the ncnn package: pip install ncnn") \
                from None
        param, weights = export(arch, kwargs, state)
        self._ncnn = ncnn
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
        for name in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                     "use_bf16_storage"):
            setattr(opt, name, False)  # fp32 throughout: the exact path
        opt.num_threads = max(1, threads)
        with tempfile.TemporaryDirectory(prefix="pegu-ncnn-") as tmp:  # read fully on load
            p, b = Path(tmp) / "net.param", Path(tmp) / "net.bin"
            p.write_text(param)
            b.write_bytes(weights)
            if self.net.load_param(str(p)) != 0 or self.net.load_model(str(b)) != 0:
                raise PeguError("ncnn could not load the exported network")
        self.output = self.net.output_names()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)  # ncnn.Mat borrows it: keep it alive
        ex = self.net.create_extractor()
        ex.input("data", self._ncnn.Mat(x))
        ret, out = ex.extract(self.output)
        if ret != 0:
            raise PeguError(f"ncnn failed on a {x.shape} tile (code {ret})")
        return np.array(out)

