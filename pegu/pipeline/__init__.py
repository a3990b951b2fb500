"""The pipeline (layer 4 of 6): a run from text to the target size, stage by stage
(:mod:`.stages`), decided before any work (:mod:`.plan`), on models kept by the one holder
(:mod:`.models`), measured (:mod:`.timing`), its result saved with its recipe
(:mod:`.result`, :mod:`.recipe`)."""
from .models import Models, Ready
from .plan import precheck, resolve_upscaler
from .recipe import read_record, read_settings
from .result import Choices, RunResult, StageCost, measure_stage, stages_table
from .stages import run, run_many, run_ready
from .timing import timed_run, warm_up

__all__ = ["Choices", "Models", "Ready", "RunResult", "StageCost", "measure_stage",
           "precheck", "read_record", "read_settings", "resolve_upscaler", "run", "run_many",
           "run_ready", "stages_table", "timed_run", "warm_up"]
