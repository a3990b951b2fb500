"""The ipywidgets explorer: every setting as a control, Generate and Save buttons, the image,
the stage table, progress, and errors shown in the interface."""
from __future__ import annotations

import html
import io
import random
from pathlib import Path

from ..core.errors import BadInput
from ..core.registry import DISTILLATIONS, GENERATORS, UPSCALERS, distill_spec, generator_spec
from ..core.settings import (SCHEDULERS, SCHEDULES, FaceSettings, GenerateSettings, RunSettings,
                             UpscaleSettings)
from ..pipeline import Models, run_ready, stages_table

SIZES = ("native", "512x512", "512x768", "768x512", "768x768", "1024x1024", "832x1216",
         "1216x832")
TARGETS = ("1024x1024", "1536x1536", "2048x2048", "2048x3072", "3072x2048")
TILES = ("auto", "0", "128", "256", "512")
CACHE_INTERVALS = ("off", "2", "3", "4", "5")
FITS = ("none", "cover", "contain")


class Explorer:
    """Interactive text → image at the target size. Models stay loaded between clicks.

    Build it in a notebook cell and show it (the last expression of the cell). The buttons'
    callbacks are plain methods (``generate``, ``save``, ``random_seed``), so they can also be
    called directly; ``result`` holds the last RunResult.
    """

    def __init__(self, model: str = "realistic-vision-v6", upscaler: str = "auto",
                 device: str = "auto", out_dir: str = "results/explorer"):
        import ipywidgets as w

        self.device = device
        self.out_dir = Path(out_dir)
        self.result = None
        self.models = Models(device)  # kept loaded between clicks
        wide = w.Layout(width="98%")
        self.prompt = w.Textarea(value="RAW photo, portrait of an old fisherman, golden hour, "
                                 "film grain", description="prompt", layout=wide)
        self.negative = w.Textarea(value="", placeholder="(the model's recommendation)",
                                   description="negative", layout=wide)
        self.model = w.Combobox(value=model, options=list(GENERATORS), description="model",
                                ensure_option=False)
        self.scheduler = w.Dropdown(options=["(model's)", *SCHEDULERS], description="scheduler")
        self.schedule = w.Dropdown(options=["(sampler's)", *SCHEDULES], description="schedule")
        # ticked "(model's)": the model's recommended steps / guidance, shown on the slider
        self.steps = w.IntSlider(value=25, min=1, max=100, description="steps", disabled=True)
        self.steps_model = w.Checkbox(value=True, description="(model's)", indent=False)
        self.guidance = w.FloatSlider(value=6.0, min=0.0, max=20.0, step=0.5,
                                      description="guidance", disabled=True)
        self.guidance_model = w.Checkbox(value=True, description="(model's)", indent=False)
        self.distill = w.Dropdown(options=["off", *DISTILLATIONS], description="distill",
                                  tooltip="few-step distillation LoRA: its card's sampler, "
                                          "steps and guidance (docs/efficiency.md)")
        self.deepcache = w.Dropdown(options=CACHE_INTERVALS, description="DeepCache",
                                    tooltip="deep UNet features every N-th step only")
        self.tome = w.FloatSlider(value=0.0, min=0.0, max=0.75, step=0.05, description="ToMe",
                                  tooltip="token merging ratio; 0 = off")
        self.seed = w.IntText(value=0, description="seed")
        self.random_button = w.Button(description="random", tooltip="a random seed")
        self.size = w.Dropdown(options=SIZES, description="size")
        self.target = w.Dropdown(options=TARGETS, value="2048x2048", description="target")
        self.fit = w.Dropdown(options=FITS, description="fit",
                              tooltip="when size and target differ in shape: cover crops the "
                                      "image, contain pads the output")
        self.upscaler = w.Dropdown(options=["auto", *UPSCALERS], value=upscaler,
                                   description="upscaler")
        self.tile = w.Dropdown(options=TILES, description="tile")
        self.refine = w.FloatSlider(value=0.0, min=0.0, max=0.7, step=0.05,
                                    description="refine", tooltip="img2img strength; 0 = off")
        self.refine_tiled = w.Checkbox(value=False, description="tiled", indent=False,
                                       tooltip="refine at the target in native-size tiles "
                                               "(MultiDiffusion)")
        self.control = w.FloatSlider(value=0.0, min=0.0, max=1.5, step=0.1,
                                     description="control", tooltip="tile ControlNet weight "
                                     "during the refine (keeps the structure); 0 = off")
        self.faces = w.FloatSlider(value=0.0, min=0.0, max=0.7, step=0.05, description="faces",
                                   tooltip="face detail: img2img strength per face; 0 = off")
        self.generate_button = w.Button(description="Generate", button_style="primary")
        self.save_button = w.Button(description="Save", disabled=True)
        self.status = w.HTML()
        self.image = w.Image(format="png", layout=w.Layout(max_width="640px"))
        self.table = w.HTML()
        self.log = w.Output()  # progress bars (tqdm) render here
        self.random_button.on_click(self.random_seed)
        self.generate_button.on_click(self.generate)
        self.save_button.on_click(self.save)
        for box, slider in ((self.steps_model, self.steps),
                            (self.guidance_model, self.guidance)):
            box.observe(lambda change, s=slider: setattr(s, "disabled", change["new"]),
                        names="value")
        self.model.observe(self._show_recommendation, names="value")
        self.distill.observe(self._show_recommendation, names="value")
        self._show_recommendation()
        self.widget = w.VBox([
            self.prompt, self.negative,
            w.HBox([self.model, self.scheduler, self.schedule]),
            w.HBox([self.steps, self.steps_model, self.guidance, self.guidance_model]),
            w.HBox([self.distill, self.deepcache, self.tome]),
            w.HBox([self.seed, self.random_button]),
            w.HBox([self.size, self.target, self.fit]),
            w.HBox([self.upscaler, self.tile]),
            w.HBox([self.refine, self.refine_tiled, self.control]),
            self.faces,
            w.HBox([self.generate_button, self.save_button]), self.status, self.log,
            self.image, self.table])

    def _show_recommendation(self, _=None) -> None:
        """Set the steps / guidance sliders that follow the model to its recommendation
        (its distillation card's, when one is chosen)."""
        try:
            spec = generator_spec(self.model.value.strip())
        except BadInput:  # a path or an unregistered Hub id: known once loaded
            spec = None
        if self.distill.value != "off":
            spec = distill_spec(self.distill.value)
        if spec is None:
            return
        if self.steps_model.value:
            self.steps.value = spec.steps
        if self.guidance_model.value:
            self.guidance.value = spec.guidance

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def settings(self):
        """The RunSettings the controls describe (raises ValueError for bad values)."""
        w = h = None
        if self.size.value != "native":
            w, h = (int(v) for v in self.size.value.split("x"))
        tw, th = (int(v) for v in self.target.value.split("x"))
        g = GenerateSettings(
            self.prompt.value, negative_prompt=self.negative.value or None, width=w, height=h,
            steps=None if self.steps_model.value else self.steps.value,
            guidance=None if self.guidance_model.value else self.guidance.value,
            scheduler=None if self.scheduler.value.startswith("(") else self.scheduler.value,
            schedule=None if self.schedule.value.startswith("(") else self.schedule.value,
            seed=self.seed.value,
            distill=None if self.distill.value == "off" else self.distill.value,
            deepcache=None if self.deepcache.value == "off" else int(self.deepcache.value),
            tome=self.tome.value or None)
        tile = None if self.tile.value == "auto" else int(self.tile.value)
        return RunSettings(g, model=self.model.value.strip(),
                           upscale=UpscaleSettings(self.upscaler.value, tile=tile),
                           target=(tw, th), refine=self.refine.value or None,
                           refine_tiled=bool(self.refine.value and self.refine_tiled.value),
                           refine_control=(self.control.value or None) if self.refine.value
                           else None,
                           fit=None if self.fit.value == "none" else self.fit.value,
                           faces=FaceSettings(self.faces.value) if self.faces.value else None)

    def random_seed(self, _=None) -> int:
        self.seed.value = random.randrange(2**31)
        return self.seed.value

    def generate(self, _=None):
        """Run the pipeline with the controls' settings; show image, table or the error."""
        self.generate_button.disabled = True
        self.status.value = "<b>working…</b>"
        self.log.clear_output()
        try:
            # a size / target mismatch is refused before a model loads; a model of other
            # settings is swapped for the one these name
            ready = self.models.ready(self.settings())
            with self.log:
                self.result = run_ready(ready)
            self.image.value = _png(self.result.image)
            self.table.value = stages_table(self.result.stages).to_html(index=False)
            self.status.value = f"<b>{_escape(self.result.summary())}</b>"
            self.save_button.disabled = False
        except Exception as e:  # shown in the interface, not as a traceback
            self.status.value = (f"<span style='color:#b00'><b>{type(e).__name__}:</b> "
                                 f"{_escape(str(e))}</span>")
        finally:
            self.generate_button.disabled = False
        return self.result

    def save(self, _=None):
        """Save the last image with its recipe into ``out_dir`` under a new name."""
        if self.result is None or self.result.image is None:
            self.status.value = "nothing to save yet: press Generate"
            return None
        s = self.result.settings
        stem = f"explorer_{Path(s.model).name}_{s.generate.seed}_{s.target[0]}x{s.target[1]}"
        path = self.out_dir / f"{stem}.png"
        n = 1
        while path.exists():
            path, n = self.out_dir / f"{stem}_{n}.png", n + 1
        try:
            self.result.save(path)
            self.status.value = f"saved <code>{_escape(str(path))}</code>"
        except Exception as e:
            self.status.value = (f"<span style='color:#b00'><b>{type(e).__name__}:</b> "
                                 f"{_escape(str(e))}</span>")
            return None
        return path


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _escape(text: str) -> str:
    return html.escape(text)
