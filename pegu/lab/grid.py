"""Grids: the YAML (or dict) that lists a sweep's runs, read, checked and expanded."""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import re
from pathlib import Path

from ..core.errors import BadInput, MissingFile
from ..core.settings import check_repeats
from .iqa import check_metrics
from .metrics import attribute_variants

# grid axis -> the settings field it sets (dotted: generate.seed is RunSettings.generate.seed)
AXES = {"models": "model", "prompts": "generate.prompt", "seeds": "generate.seed",
        "schedulers": "generate.scheduler", "steps": "generate.steps",
        "guidance": "generate.guidance", "upscalers": "upscale.model", "modes": "mode",
        "targets": "target", "refine": "refine", "refine_control": "refine_control",
        "distill": "generate.distill", "deepcache": "generate.deepcache",
        "tome": "generate.tome", "ways": None}
# the three ways to the target (axis "ways"), each the settings it stands for
WAYS = {"upscale": {"mode": "upscale"},
        "tiled refine": {"mode": "upscale", "refine": 0.3, "refine_tiled": True},
        "direct": {"mode": "direct"}}


# counted before a grid's run list is built: beyond MANY_RUNS a sweep needs many=True
# (--many), beyond MAX_RUNS it is refused
MANY_RUNS = 10_000
MAX_RUNS = 1_000_000


# what a grid file may hold: its size on disk, and its values once YAML's aliases are
# expanded (a "billion laughs" file of a few hundred bytes expands to 10^9 values)
MAX_GRID_BYTES = 1 << 20
MAX_GRID_VALUES = 100_000


def read_grid(grid) -> dict:
    """A grid as a dict: ``grid`` itself, or the mapping in the YAML file it names.

    The file is read by a YAML loader that refuses what a grid never needs and a hostile
    file uses: a file over MAX_GRID_BYTES, a key given twice in one mapping (YAML keeps the
    last silently), aliases that expand beyond MAX_GRID_VALUES values or refer to
    themselves, and values that are not plain data (dates, sets, binary) or not finite."""
    if isinstance(grid, dict):
        _check_plain(grid, "the grid")
        return grid
    import yaml

    path = Path(grid)
    if not path.is_file():
        raise MissingFile(f"grid file not found: {path}")
    if path.stat().st_size > MAX_GRID_BYTES:
        raise BadInput(f"{path} is {path.stat().st_size:,} bytes; a grid file is at most "
                       f"{MAX_GRID_BYTES:,} (list values, not runs: the runs are every "
                       "combination of the axes)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save the "
                       "grid as UTF-8") from None
    loader = _grid_loader()(text)
    loader.name = path.name  # where its errors point
    try:
        node = loader.get_single_node()
        if node is None:
            data = {}
        else:
            _expanded_size(node, path)
            data = loader.construct_document(node) or {}
    except yaml.YAMLError as e:
        raise BadInput(f"{path} is not valid YAML: {' '.join(str(e).split())}") \
            from None
    except RecursionError:
        raise BadInput(f"{path} nests lists or mappings too deeply for a grid") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise BadInput(f"{path} must hold a mapping (base: ..., models: [...], ...)")
    if set(data) == {"grid", "runs", "digest"} and isinstance(data["grid"], dict):
        data = data["grid"]  # a sweep folder's grid.json: the grid it ran
    _check_plain(data, str(path))
    return data


def _grid_loader():
    import yaml

    class GridLoader(yaml.SafeLoader):
        """PyYAML's safe loader, refusing a key given twice in one mapping."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self.flatten_mapping(node)
                seen = set()
                for key_node, _ in node.value:
                    key = self.construct_object(key_node, deep=True)
                    try:
                        twice = key in seen
                    except TypeError:
                        continue  # unhashable: PyYAML's own error follows
                    if twice:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {key!r} is given twice (YAML would keep "
                            "only the last); give each key once", key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return GridLoader


def _expanded_size(root, path) -> int:
    """The number of values under ``root`` with every alias expanded (counted once per
    node, so a billion laughs costs a few steps); BadInput beyond MAX_GRID_VALUES or for
    an alias inside its own anchor."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise BadInput(f"{path}: an alias refers to the value that holds it (a "
                           "recursive anchor); a grid is plain lists and mappings")
        open_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(v) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        open_nodes.discard(id(node))
        sizes[id(node)] = n
        if n > MAX_GRID_VALUES:
            raise BadInput(f"{path} expands to more than {MAX_GRID_VALUES:,} values once its "
                           "YAML aliases (*name) are expanded; a grid lists values, and "
                           "pegu makes the combinations")
        return n

    return size(root)


def _check_plain(value, where: str, at: str = "") -> None:
    """BadInput unless ``value`` is plain data (text, whole or finite numbers, true/false,
    null, lists, mappings with text or number keys)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{where}: {at or 'a value'} is {value}; give a finite number")
    if value is None or isinstance(value, (str, numbers.Real)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, where, f"{at}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, numbers.Real)):
                raise BadInput(f"{where}: the key {k!r} at {at or 'the top'} is not text")
            _check_plain(v, where, f"{at}.{k}" if at else str(k))
        return
    raise BadInput(f"{where}: {at or 'a value'} is a {type(value).__name__} ({value!r}); "
                   "grids hold text, numbers, lists and mappings (quote dates and times)")


def load_grid(grid, many: bool = False) -> list[dict]:
    """The runs of a grid (a dict, or the path of a YAML file holding one), as settings dicts.

    ``base`` holds fixed RunSettings fields (nested ``generate``/``upscale`` dicts); each axis
    (``models``, ``prompts``, ``seeds``, ``schedulers``, ``steps``, ``guidance``, ``upscalers``,
    ``modes``, ``targets``, ``refine``, ``refine_control``, ``distill``, ``deepcache``,
    ``tome``; null: off; ``ways``: "upscale", "tiled refine", "direct", see ``WAYS``) lists
    values; the runs are every combination.
    ``timing`` (optional) is :func:`grid_timing`'s, ``iqa`` :func:`grid_iqa`'s. A grid of more than ``MANY_RUNS`` runs
    needs ``many=True``; more than ``MAX_RUNS`` is refused. Settings are validated when each
    run starts, so one bad combination fails alone.
    """
    grid = read_grid(grid)
    unknown = sorted(map(str, set(grid) - set(AXES) - {"base", "attributes", "timing", "iqa"}))
    if unknown:
        raise BadInput(f"unknown grid keys {unknown}; use 'base', 'attributes', 'timing', "
                         f"'iqa' and {sorted(AXES)}")
    grid_timing(grid)
    grid_iqa(grid)
    base = grid.get("base") or {}
    if not isinstance(base, dict) or any(not isinstance(base.get(k, {}), dict)
                                         for k in ("generate", "upscale")):
        raise BadInput("base must be a mapping of settings, with generate and upscale as "
                         "mappings too, e.g. base: {target: [2048, 2048], generate: {steps: 25}}")
    axes = {k: v if isinstance(v, list) else [v] for k, v in grid.items() if k in AXES}
    if grid.get("attributes"):
        if "prompts" in axes:
            raise BadInput("give either prompts or attributes (which make the prompts)")
        axes["prompts"] = attribute_prompts(grid["attributes"])
    bad = [w for w in axes.get("ways", []) if not isinstance(w, str) or w not in WAYS]
    if bad:
        raise BadInput(f"unknown ways {bad}; the ways to the target are {list(WAYS)}")
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise BadInput(f"grid axes {empty} are empty lists: give at least one value, or "
                         "leave the axis out")
    total = math.prod(len(v) for v in axes.values())
    if total > MAX_RUNS:  # counted before the run list is built
        raise BadInput(f"the grid makes {total:,} runs (the product of its axes' lengths); "
                         f"pegu runs at most {MAX_RUNS:,} per sweep: split it into sweeps "
                         "or shorten axes")
    if total > MANY_RUNS and not many:
        raise BadInput(f"the grid makes {total:,} runs (the product of its axes' lengths), "
                         f"more than {MANY_RUNS:,}: if you mean it, pass --many "
                         "(many=True); else shorten axes")
    runs = []
    for combo in itertools.product(*axes.values()):
        d = json.loads(json.dumps(base))
        d.setdefault("generate", {})
        for axis, value in zip(axes, combo):
            if axis == "ways":
                d.update(WAYS[value])
                continue
            *parents, leaf = AXES[axis].split(".")
            node = d
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        d["generate"].setdefault("prompt", "")
        runs.append(d)
    return runs


def grid_timing(grid: dict) -> tuple[bool, int]:
    """A grid's ``timing: {warmup: true, repeats: 1}``: whether each model and shape gets an
    untimed warm-up run first, and how many timed runs each row's median is taken over."""
    timing = grid.get("timing") or {}
    if not isinstance(timing, dict) or set(timing) - {"warmup", "repeats"}:
        raise BadInput("timing takes warmup (true/false) and repeats (1-100), e.g. "
                         f"timing: {{warmup: true, repeats: 3}}; got {timing!r}")
    warmup, repeats = timing.get("warmup", True), timing.get("repeats", 1)
    if not isinstance(warmup, bool):
        raise BadInput(f"timing.warmup must be true or false, got {warmup!r}")
    return warmup, check_repeats(repeats, "timing.repeats")


def grid_iqa(grid: dict) -> tuple[str, ...]:
    """A grid's ``iqa: [musiq, niqe]``: pyiqa no-reference metrics scored on every image
    (columns ``iqa.<name>``; needs the iqa extra, see :mod:`pegu.iqa`)."""
    names = grid.get("iqa") or []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadInput(f"iqa takes a list of pyiqa metric names, e.g. iqa: [musiq, niqe]; "
                         f"got {names!r}")
    if not names:
        return ()
    return check_metrics(names)


def attribute_prompts(spec: dict) -> list[str]:
    """Prompt variants for attribute control: {"template": "a woman with {hair} hair",
    "hair": ["red", "black"]} -> one prompt per value (one attribute per template). An
    optional "question" with the same {slot} is what the VQA model is asked about each
    variant (:func:`attribute_questions`)."""
    return list(attribute_questions(spec))


def attribute_questions(spec: dict) -> dict[str, str | None]:
    """{prompt variant: its yes/no question} of an attributes spec: the spec's "question"
    with the variant's value filled in (TIFA-style, e.g. "Does the woman have {hair}
    hair?"), or None where it has none (then the VQA model is asked whether the image shows
    the prompt, pegu.lab.judges.QUESTION)."""
    if not isinstance(spec, dict):
        spec = {}  # refused below, with an example
    template = spec.get("template")
    slots = re.findall(r"\{(\w+)\}", template) if isinstance(template, str) else []
    question = spec.get("question") or None
    if question is not None and (not isinstance(question, str) or not slots
                                 or re.findall(r"\{(\w+)\}", question) != slots[:1]):
        raise BadInput(f"attributes: question must be text with the template's one slot, e.g. "
                       f"'Does the woman have {{{slots[0] if slots else 'hair'}}} hair?'; "
                       f"got {question!r}")
    names = [k for k in spec if k not in ("template", "question")]
    if len(slots) != 1 or len(names) != 1 or names[0] not in (slots[0], "values"):
        raise BadInput("attributes needs a template with one {name} and that name's "
                         "values, e.g. {template: 'a woman with {hair} hair', hair: [red, black]}"
                         " (or values: [...])")
    values = spec[names[0]]
    if not isinstance(values, list) or not values or not all(
            isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        raise BadInput(f"attributes: {names[0]} must be a list of values (words or numbers), "
                         f"e.g. [red, black]; got {values!r}")
    values = [str(v) for v in values]
    prompts = attribute_variants(template, slots[0], values)
    asks = attribute_variants(question, slots[0], values) if question else [None] * len(values)
    return dict(zip(prompts, asks))


def run_id(settings: dict) -> str:
    """A stable id for a run: a hash of its settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def flatten(d: dict, prefix: str = "") -> dict:
    """{"generate": {"seed": 1}} -> {"generate.seed": 1}; lists become "AxB" strings."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = "x".join(str(x) for x in v)
        else:
            out[key] = v
    return out
