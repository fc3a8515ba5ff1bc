"""Every error headstart raises on purpose.

Each subclasses a built-in so callers can catch it the usual way, and each message says what
was received, what was expected and how to fix it. The CLI prints the message on one line
and exits with status 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class HeadstartError(Exception):
    """Base class of headstart's own errors."""


class DataError(HeadstartError, ValueError):
    """The data given for training or evaluation cannot be used as it is."""


class ImageReadError(DataError):
    """One image file cannot be read, with the file named in the message."""

    def __init__(self, source: str, reason: str, fix: str = "") -> None:
        self.source = source
        self.reason = reason
        message = f"{source}: {reason}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class UnknownBackboneError(HeadstartError, KeyError):
    """A backbone name that the registry does not know."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = closest(name, known)
        hint = f" Did you mean '{close}'?" if close else f" Known: {', '.join(known)}."
        self.message = f"Unknown backbone '{name}'.{hint} See `headstart models`."
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class WeightsError(HeadstartError, ValueError):
    """Weights that cannot be found, read, or loaded into an architecture."""


class WeightsMismatchError(WeightsError):
    """A checkpoint whose tensors do not fit the architecture, with a full report."""

    def __init__(self, source: str, arch: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if mismatched:
            shown = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} mis-shaped ({_few(shown)})")
        super().__init__(
            f"Weights {source} do not fit architecture '{arch}': {'; '.join(parts)}. "
            f"Check that the checkpoint was saved from '{arch}', or pick the matching --backbone."
        )


class RunDirError(HeadstartError, ValueError):
    """A run directory that is missing, incomplete, or in the way."""


class RunLockedError(RunDirError):
    """A run directory that another live process is writing."""

    def __init__(self, run: str, pid, host: str, since: str = "") -> None:
        self.run, self.pid, self.host = run, pid, host
        where = f" on {host}" if host else ""
        when = f" since {since}" if since else ""
        super().__init__(f"run {run} is being written by process {pid}{where}{when}; wait for "
                         "it to finish or stop it, or choose another --out")


class DamagedFileError(HeadstartError, ValueError):
    """A file headstart wrote earlier (run, checkpoint, cache) that cannot be read back."""


class ConfigError(HeadstartError, ValueError):
    """An option value that is out of range or does not fit the others."""


class ProcessGroupError(HeadstartError, RuntimeError):
    """A torchrun job that lost one of its processes (the survivors stop with this)."""


class ExportError(HeadstartError, RuntimeError):
    """An export that cannot be written or read, or whose parity check failed."""


def closest(name: str, known: list[str], cutoff: float = 0.6) -> str | None:
    """The most similar known name; ties go to the first in sorted order."""
    scored = [(difflib.SequenceMatcher(None, name, k).ratio(), k) for k in sorted(known)]
    best = max((r for r, _ in scored), default=0.0)
    return next((k for r, k in scored if r == best), None) if best >= cutoff else None


def _few(items: list[str], limit: int = 4) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")


class SourceMismatchError(WeightsError):
    """A source model (a headstart run used as a backbone) that does not fit what was asked:
    another architecture, input size or modality. The message lists every difference."""

    def __init__(self, source: str, differences: list[tuple[str, str, str]], fix: str) -> None:
        self.differences = differences
        shown = "; ".join(f"{what}: source {have} vs requested {want}"
                          for what, have, want in differences)
        super().__init__(f"source model {source} does not fit: {shown}. {fix}")
