"""The ``pegu`` command (layer 6 of 6, the top): the parser (:mod:`.parser`), the commands
(:mod:`.commands`), ``pegu doctor``, ``pegu demo`` and the Kaggle kernels and wheel dataset
(:mod:`.kaggle`). A client of the library, never the other way."""
from __future__ import annotations

import sys

from ..core.errors import PeguError
from . import commands
from .parser import parser

COMMANDS = {"upscale": commands.upscale, "models": commands.models, "demo": commands.demo,
            "generate": commands.generate, "info": commands.info, "sweep": commands.sweep,
            "doctor": commands.doctor, "iqa": commands.iqa, "kaggle": commands.kaggle}


def main(argv: list[str] | None = None) -> int:
    """Run ``pegu ARGS``; returns the exit status: 0 done, 1 some runs failed, 2 refused
    (the one-line message says why and what to do), 130 interrupted."""
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (PeguError, ValueError, OSError, RuntimeError, MemoryError) as e:
        # PeguError: pegu's own refusals; the built-ins: what the system or a library says
        # about the input (a disk that is full, a file that is not an image)
        message = " ".join(str(e).split()) or type(e).__name__  # one line
        print(f"pegu {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
