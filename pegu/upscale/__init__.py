"""The upscaler stage (layer 3 of 6, beside generate): networks (:mod:`.networks`), tiled
inference (:mod:`.tiling`), the Upscaler (:mod:`.upscaler`), loading (:mod:`.load`), the ncnn
engine and realesrgan's own reference."""
from .load import auto_upscaler, load_upscaler, load_upscaler_from
from .upscaler import UpscaleResult, Upscaler, default_tile

__all__ = ["UpscaleResult", "Upscaler", "auto_upscaler", "default_tile", "load_upscaler",
           "load_upscaler_from"]
