"""Is a path usable for what the suite will write there: one check, for options and commands alike."""

from __future__ import annotations

import os
from pathlib import Path


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
