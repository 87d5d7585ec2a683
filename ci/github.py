"""GitHub Actions I/O: job summary, step outputs, annotations. Outside Actions they print instead.

Every function takes the file explicitly or reads the variable GitHub sets
($GITHUB_STEP_SUMMARY, $GITHUB_OUTPUT, $GITHUB_PATH), so each is testable with a temporary file.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path


def in_actions(env: Mapping[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def truthy(value: str | None) -> bool:
    """'true', '1', 'yes', 'on' (any case) -> True; '', None, 'false', '0' -> False (workflow inputs and labels)."""
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def append_summary(markdown: str, path: str | os.PathLike | None = None) -> Path | None:
    """Append ``markdown`` to the job summary (``path`` or $GITHUB_STEP_SUMMARY); None when neither is set."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return Path(target)


def set_outputs(path: str | os.PathLike | None = None, **values: object) -> None:
    """Write step outputs to ``path`` or $GITHUB_OUTPUT (multi-line values with a unique delimiter)."""
    target = path or os.environ.get("GITHUB_OUTPUT")
    lines = []
    for name, value in values.items():
        text = "" if value is None else str(value)
        if "\n" in text:
            delimiter = f"EOF_{uuid.uuid4().hex}"
            lines.append(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")
        else:
            lines.append(f"{name}={text}\n")
    if not target:
        for line in lines:
            print(f"output: {line}", end="")
        return
    with open(target, "a", encoding="utf-8") as fh:
        fh.writelines(lines)


def add_path(directory: str | os.PathLike, path: str | os.PathLike | None = None) -> bool:
    """Prepend ``directory`` to PATH for the following steps ($GITHUB_PATH); False outside Actions."""
    target = path or os.environ.get("GITHUB_PATH")
    if not target:
        return False
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(f"{directory}\n")
    return True


def _escape(text: str, prop: bool = False) -> str:
    text = str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def annotation(level: str, message: str, title: str = "") -> str:
    """The workflow command for an annotation: '::error title=T::message' (escaped)."""
    props = f" title={_escape(title, prop=True)}" if title else ""
    return f"::{level}{props}::{_escape(message)}"


def annotate(level: str, message: str, title: str = "", stream=None) -> None:
    """An error/warning/notice annotation in Actions; a plain 'level: message' line elsewhere."""
    stream = stream or sys.stderr
    if in_actions():
        print(annotation(level, message, title), file=stream, flush=True)
    else:
        print(f"{level}: {title + ': ' if title else ''}{message}", file=stream, flush=True)
