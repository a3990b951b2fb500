"""The errors pegu raises on purpose. Each message says what went wrong and what to do.

Each class also derives from the built-in error it refines (``BadInput`` is a ValueError,
``WeightsUnavailable`` a FileNotFoundError, ...), so code written against the built-ins keeps
working; catch :class:`PeguError` to tell pegu's refusals from bugs. The ``pegu`` command
turns every PeguError into its one-line message and exit status 2.
"""
from __future__ import annotations


class PeguError(Exception):
    """An error pegu raised on purpose; its message says what to do."""


class BadInput(PeguError, ValueError):
    """A setting, argument or file that pegu cannot use as given."""


class MissingFile(PeguError, FileNotFoundError):
    """A file or folder the caller named does not exist."""


class OutputExists(PeguError, FileExistsError):
    """Writing would replace an existing file that the caller did not allow to replace."""


class WriteFailed(PeguError, OSError):
    """The system refused a write (a full disk, a file-size limit, a read-only folder, a
    folder where a file should go); nothing partial was left and earlier files are intact."""


class WeightsError(PeguError, RuntimeError):
    """Weights that cannot be used or trusted: damaged, of another architecture, or not the
    published file."""


class WeightsUnavailable(WeightsError, FileNotFoundError):
    """Weights that are not on this machine and cannot be fetched now (offline, or the
    download failed); the message says where to put them."""


class MissingPackage(PeguError, RuntimeError):
    """An optional package a feature needs is not installed; the message names the install."""


class OutOfMemory(PeguError, MemoryError):
    """The work does not fit in this machine's memory even at pegu's smallest settings."""


class NotFinite(PeguError, FloatingPointError):
    """A model produced NaN or infinite values even after pegu's fallbacks; the message says
    what to try."""


class GpuUnsupported(PeguError, RuntimeError):
    """The installed torch cannot run on this GPU, or not in the dtype asked for."""
