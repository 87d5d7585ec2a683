"""Is a path usable for what the suite will write there: one check, for options and commands alike."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import UsageError


def unwritable(path: str | os.PathLike) -> str:
    """Why a file at ``path`` could not be written later ('' when it can); nothing is created.

    It must not be a folder, its folder must exist and be writable, and an existing file there
    must be writable.
    """
    target = Path(path)
    try:
        if target.is_dir():
            return "is a directory; give a file path"
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.exists():
            return f"directory {str(folder)!r} does not exist; give a file in an existing directory"
        if not folder.is_dir():
            return f"{str(folder)!r} is not a directory; give a file in an existing directory"
        if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
            return f"{str(target if target.exists() else folder)!r} is not writable here"
    except OSError as exc:  # a name too long, a loop of links
        return f"cannot be checked: {exc.strerror or exc}"
    return ""


def require_writable(outputs: Mapping[str, str | os.PathLike | None]) -> None:
    """UsageError for the first of ``outputs`` ({option: path or None}) that could not be written later:
    checked before measuring, so that minutes of it are not lost to a report's path."""
    for option, path in outputs.items():
        why = unwritable(path) if path else ""
        if why:
            raise UsageError(f"{option} {str(path)!r}: {why}")


@contextlib.contextmanager
def writing(option: str, path: str | os.PathLike, what: str) -> Iterator[None]:
    """Around the writing of ``what`` to ``path``: an OSError (what ``unwritable`` cannot see beforehand: a
    full disk, a file that refuses writes) is a one-line UsageError naming ``option``."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"{option} {str(path)!r}: cannot write {what}: {exc.strerror or exc}") from None
