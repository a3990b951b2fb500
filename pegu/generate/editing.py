"""A1111's prompt editing, alternation and AND: which text conditions each sampler call.

Sources: A1111 modules/prompt_parser.py (v1.10: its lark grammar, the doctests of
``get_learned_conditioning_prompt_schedules``, ``get_multicond_prompt_list``,
``reconstruct_multicond_batch``) and modules/sd_samplers_cfg_denoiser.py (the step counter,
``combine_denoised``, ``pad_cond_uncond``). What A1111 does, and so what pegu does:

* ``[a:b:when]`` is a until ``when``, then b; ``[a::when]`` drops a, ``[b:when]`` / ``[:b:when]``
  adds b. ``when`` with a decimal point is a fraction of the steps, without one a step
  number; in a hires pass a fraction counts from 1.0 and a step number from the first pass's
  steps (so ``[x:1.5]`` switches half-way through the hires pass). Nested; an unparsable
  prompt (unbalanced brackets) is read whole as text, the emphasis parser's way.
* ``[a|b|...]`` alternates every step; an empty alternative is empty text.
* ``a AND b:w`` conditions on each part; the prediction is
  ``uncond + cfg · Σ wᵢ (condᵢ − uncond)``. A trailing ``:w`` on any prompt weights it.
* Sampler calls are counted from 0 and each picks the first text whose end step it has not
  passed (``call <= end``); second-order samplers (Heun, DPM2, DPM2 a, DPM++ SDE) call the
  model twice per step, and their schedules count twice the steps.
* The conditions of AND parts of different lengths are padded with their last vector; the
  prompt and the negative prompt run at their own lengths (two model calls when they differ),
  unless ``pad`` asks for A1111's "pad prompt/negative prompt" option (empty-prompt chunks).
* The negative prompt is scheduled too, but AND in it is text.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

from .prompts import encode, load_embeddings
from .tiled import ControlCall, restore_forward

# A1111's grammar, verbatim (modules/prompt_parser.py)
GRAMMAR = r"""
!start: (prompt | /[][():]/+)*
prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*
!emphasized: "(" prompt ")"
        | "(" prompt ":" prompt ")"
        | "[" prompt "]"
scheduled: "[" [prompt ":"] prompt ":" [WHITESPACE] NUMBER [WHITESPACE] "]"
alternate: "[" prompt ("|" [prompt])+ "]"
WHITESPACE: /\s+/
plain: /([^\\\[\]():|]|\\.)+/
%import common.SIGNED_NUMBER -> NUMBER
"""
_AND = re.compile(r"\bAND\b")
_WEIGHT = re.compile(r"^(\s*.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
# samplers whose every step calls the model twice (A1111's "second_order" option)
SECOND_ORDER = ("Heun", "DPM2", "DPM2 a", "DPM++ SDE")
MAX_PROMPT = 20_000  # characters; the Earley parser's cost grows fast beyond


def total_steps(sampler: str, steps: int) -> int:
    """The steps a prompt schedule counts: twice ``steps`` for second-order samplers."""
    base = sampler.removesuffix(" Karras").removesuffix(" Exponential")
    return 2 * steps if base in SECOND_ORDER else steps


_PARSER = None


def _parser():
    global _PARSER
    if _PARSER is None:
        import lark

        _PARSER = lark.Lark(GRAMMAR)
    return _PARSER


def schedule(prompt: str, steps: int, hires_steps: int | None = None) -> list[tuple[int, str]]:
    """[(end step, text)] of ``prompt`` over ``steps`` (A1111's
    ``get_learned_conditioning_prompt_schedules``); ``hires_steps``: the schedule of a hires
    pass of that many steps after a first pass of ``steps``.

    >>> schedule("a [b:c:0.5]", 10)
    [(5, 'a b'), (10, 'a c')]
    """
    import lark

    if hires_steps is None:
        int_offset, flt_offset, total = 0, 0.0, steps
    else:
        int_offset, flt_offset, total = steps, 1.0, hires_steps
    if len(prompt) > MAX_PROMPT:
        return [(total, prompt)]
    try:
        tree = _parser().parse(prompt)
    except lark.exceptions.LarkError:
        return [(total, prompt)]
    ends = {total}

    class Collect(lark.Visitor):
        def scheduled(self, t):
            s = str(t.children[-2])
            v = float(s)
            v = (v - flt_offset) * total if "." in s else v - int_offset
            t.children[-2] = min(total, int(v))
            if t.children[-2] >= 1:
                ends.add(t.children[-2])

        def alternate(self, t):
            ends.update(range(1, total + 1))

    Collect().visit(tree)

    def text_at(step: int, node) -> str:
        if isinstance(node, str) or node is None:
            return str(node or "")
        kind, kids = node.data, node.children
        if kind == "scheduled":
            before, after, when = kids[0], kids[1], kids[-2]
            return text_at(step, before) if step <= when else text_at(step, after)
        if kind == "alternate":
            return text_at(step, kids[(step - 1) % len(kids)])
        if kind == "plain":
            return str(kids[0])
        return "".join(text_at(step, k) for k in kids)

    return [(t, text_at(t, tree)) for t in sorted(ends)]


def split_and(prompt: str) -> list[tuple[str, float]]:
    """[(text, weight)] of ``prompt``'s AND parts (A1111's ``get_multicond_prompt_list``):
    a trailing ``:number`` weights a part (default 1).

    >>> split_and("a cat AND a dog:0.5")
    [('a cat', 1.0), ('a dog', 0.5)]
    """
    out = []
    for part in _AND.split(prompt):
        m = _WEIGHT.search(part)
        text, weight = m.groups() if m is not None else (part, None)
        out.append((text, float(weight) if weight is not None else 1.0))
    return out


@dataclass
class Scheduled:
    """One text's conditioning over the calls: ends[i] is the last call of embeds[i]."""

    ends: list[int]
    embeds: list  # 1×L×C tensors
    pooled: list  # 1×P tensors (SDXL) or None

    def at(self, call: int) -> int:
        """The index in use at sampler call ``call`` (A1111: the first end not passed)."""
        for i, end in enumerate(self.ends):
            if call <= end:
                return i
        return 0


@dataclass
class Plan:
    """What conditions each sampler call: the AND parts (weight, schedule), the negative
    prompt's schedule, A1111's padding option, and how many images share them."""

    conds: list[tuple[float, Scheduled]]
    uncond: Scheduled
    images: int = 1
    pad: bool = False
    empty: object = None  # the empty prompt's embedding, for padding
    calls: int = field(default=0, init=False)

    @property
    def static(self) -> bool:
        """True when one call of the pipeline's own kind does it all: one text each, the
        same length (or padded), weight 1."""
        (w, c), u = self.conds[0], self.uncond
        return (len(self.conds) == 1 and w == 1 and len(c.ends) == 1 and len(u.ends) == 1
                and (self.pad or c.embeds[0].shape[1] == u.embeds[0].shape[1]))

    def first(self) -> dict:
        """The pipeline's text keywords: the first call's conditioning (padded alike)."""
        c, u = self.conds[0][1], self.uncond
        pos, neg = c.embeds[0], u.embeds[0]
        pos, neg = _pad_pair(pos, neg, self.empty, force=True)
        out = {"prompt_embeds": pos, "negative_prompt_embeds": neg}
        if c.pooled[0] is not None:
            out.update(pooled_prompt_embeds=c.pooled[0],
                       negative_pooled_prompt_embeds=u.pooled[0])
        return out


def _pad_last(tensors: list) -> list:
    """A1111's padding of AND parts: each repeats its last vector up to the longest."""
    import torch

    n = max(t.shape[1] for t in tensors)
    return [t if t.shape[1] == n else torch.cat([t, t[:, -1:].repeat(1, n - t.shape[1], 1)], 1)
            for t in tensors]


def _pad_pair(cond, uncond, empty, force: bool):
    """cond and uncond padded to one length with empty-prompt chunks (A1111's
    ``pad_cond_uncond``); unchanged when ``force`` is off and they differ."""
    import torch

    if cond.shape[1] == uncond.shape[1] or not force:
        return cond, uncond
    if empty is None:
        empty = torch.zeros_like(cond[:, :77])
    reps = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]
    pad = lambda t, k: torch.cat([t] + [empty.to(t)] * k, dim=1)  # noqa: E731
    return (cond, pad(uncond, reps)) if reps > 0 else (pad(cond, -reps), uncond)


def _take(value, rows, n: int):
    """``value`` (a tensor, dict, tuple or put-off ControlNet call) with the batch rows
    ``rows`` of an ``n``-row batch; anything else unchanged."""
    import torch

    if torch.is_tensor(value):
        return value[rows] if value.ndim and value.shape[0] == n else value
    if isinstance(value, dict):
        return {k: _take(v, rows, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_take(v, rows, n) for v in value)
    if isinstance(value, ControlCall):
        call = object.__new__(ControlCall)
        call.encoder_hidden_states = _take(value.encoder_hidden_states, rows, n)
        call.cond = _take(value.cond, rows, n)
        call.kwargs = _take(value.kwargs, rows, n)
        return call
    return value


@contextlib.contextmanager
def scheduled_unet(unet, plan: Plan):
    """Within the block each call of ``unet`` is conditioned as A1111 would at that call:
    the scheduled texts, the AND parts combined, prompt and negative at their own lengths.
    The pipeline's batch is [negative × images, prompt × images] with CFG, else
    [prompt × images]."""
    import torch

    own, forward = unet.__dict__.get("forward"), unet.forward
    plan.calls = 0

    def run(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        n, b = sample.shape[0], plan.images
        cfg = n == 2 * b
        call = plan.calls
        plan.calls += 1
        return_dict = kwargs.pop("return_dict", True)
        u = plan.uncond
        iu = u.at(call)
        picks = [(w, s.embeds[s.at(call)], s.pooled[s.at(call)]) for w, s in plan.conds]
        conds = _pad_last([e for _, e, _ in picks])
        own_rows = list(range(b, 2 * b)) if cfg else list(range(b))
        if cfg:
            uemb = u.embeds[iu]
            if plan.pad:
                padded = [_pad_pair(e, uemb, plan.empty, force=True) for e in conds]
                conds, uemb = [c for c, _ in padded], padded[0][1]
        # the parts, a model call per length: (old batch rows, embedding, pooled)
        parts = [(own_rows, e, p) for e, (_, _, p) in zip(conds, picks)]
        if cfg:
            parts.insert(0, (list(range(b)), uemb, u.pooled[iu]))
        groups: dict[int, list] = {}
        for k, (rows, emb, pooled) in enumerate(parts):
            groups.setdefault(emb.shape[1], []).append((k, rows, emb, pooled))
        outs: dict[int, object] = {}
        for members in groups.values():
            rows = [r for _, rs, _, _ in members for r in rs]
            ehs = torch.cat([e.to(sample.device).expand(len(rs), -1, -1)
                             for _, rs, e, _ in members])
            kw = _take(kwargs, rows, n)
            if members[0][3] is not None and isinstance(kw.get("added_cond_kwargs"), dict):
                kw["added_cond_kwargs"] = dict(kw["added_cond_kwargs"], text_embeds=torch.cat(
                    [p.to(sample.device).expand(len(rs), -1) for _, rs, _, p in members]))
            out = forward(sample[rows], _take(timestep, rows, n), ehs.to(sample.dtype),
                          *args, return_dict=False, **kw)[0]
            at = 0
            for k, rs, _, _ in members:
                outs[k] = out[at:at + len(rs)]
                at += len(rs)
        if cfg:
            uncond = outs[0]
            preds = [outs[k + 1] for k in range(len(plan.conds))]
        else:
            preds = [outs[k] for k in range(len(plan.conds))]
            uncond = preds[0]  # A1111 without an uncond: the first part stands in
        combined = uncond.clone()
        for (w, _), pred in zip(plan.conds, preds):
            combined = combined + w * (pred - uncond)
        result = torch.cat([uncond, combined]) if cfg else combined
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=result)
        return (result,)

    unet.forward = run
    try:
        yield plan
    finally:
        restore_forward(unet, own)


def build_plan(pipe, prompt: str, negative: str | None, *, steps: int,
               hires_steps: int | None = None, images: int = 1, pad: bool = False,
               clip_skip: int = 1) -> tuple[Plan, list]:
    """The Plan of a call of ``steps`` schedule steps (``total_steps``; ``hires_steps``: a
    hires pass after them), and the textual-inversion embeddings its texts use [(name,
    file)], loaded into ``pipe`` first. An empty negative on a model configured with
    ``force_zeros_for_empty_prompt`` (SDXL base) is zeros, as in A1111 and diffusers."""
    import torch

    parts = [(schedule(text, steps, hires_steps), w) for text, w in split_and(prompt)]
    zeros = not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    negs = None if zeros else schedule(negative or "", steps, hires_steps)
    texts = [t for entries, _ in parts for _, t in entries] + [t for _, t in negs or []]
    used = load_embeddings(pipe, texts)
    device = pipe._execution_device
    cache: dict[str, tuple] = {}

    def encoded(text: str):
        if text not in cache:
            cache[text] = encode(pipe, text, True, device, clip_skip)
        return cache[text]

    def scheduled(entries) -> Scheduled:
        got = [encoded(t) for _, t in entries]
        return Scheduled([e for e, _ in entries], [z for z, _ in got], [p for _, p in got])

    conds = [(w, scheduled(entries)) for entries, w in parts]
    if zeros:
        z, p = conds[0][1].embeds[0], conds[0][1].pooled[0]
        uncond = Scheduled([hires_steps or steps], [torch.zeros_like(z[:, :77])],
                           [None if p is None else torch.zeros_like(p)])
    else:
        uncond = scheduled(negs)
    empty = encoded("")[0] if pad else None
    return Plan(conds, uncond, images=images, pad=pad, empty=empty), used
