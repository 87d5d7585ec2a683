"""Git revisions checked out beside the working tree (``git worktree``): what an A/B, a confirmation
against a baseline's commit and a bisection measure."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .cli import git
from .errors import UsageError


def toplevel(path: str | os.PathLike) -> Path:
    """The top folder of the git repository ``path`` is in; UsageError when it is none."""
    if not Path(path).is_dir():
        raise UsageError(f"not a directory: {path}")
    try:
        return Path(git(path, "rev-parse", "--show-toplevel"))
    except UsageError:
        raise UsageError(f"not a git repository: {Path(path).resolve()}") from None


def resolve(repo: str | os.PathLike, rev: str) -> str:
    """The commit a revision names, or UsageError('unknown revision ...')."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except UsageError:
        raise UsageError(f"unknown revision {rev!r} in {repo}") from None


def exists(repo: str | os.PathLike, rev: str) -> bool:
    try:
        resolve(repo, rev)
    except UsageError:
        return False
    return True


def default_base(repo: str | os.PathLike) -> str:
    """merge-base of HEAD and origin/main when origin/main exists, else HEAD~1."""
    if exists(repo, "refs/remotes/origin/main"):
        try:
            return git(repo, "merge-base", "HEAD", "origin/main")
        except UsageError:
            pass
    try:
        return resolve(repo, "HEAD~1")
    except UsageError:
        raise UsageError("no default base: no origin/main and no HEAD~1; pass --base REV") from None


def describe_working_tree(repo: str | os.PathLike) -> str:
    dirty = ", uncommitted changes" if git(repo, "status", "--porcelain") else ""
    return f"working tree (HEAD {git(repo, 'rev-parse', '--short', 'HEAD')}{dirty})"


def add_worktree(repo: str | os.PathLike, sha: str, dest: Path) -> Path:
    git(repo, "worktree", "add", "--detach", "--quiet", str(dest), sha)
    return dest


def remove_worktree(repo: str | os.PathLike, dest: Path) -> None:
    """Best effort: a failure here must not hide the run's own outcome."""
    try:
        git(repo, "worktree", "remove", "--force", str(dest))
    except UsageError:
        shutil.rmtree(dest, ignore_errors=True)
        with contextlib.suppress(UsageError):
            git(repo, "worktree", "prune")


def sources_digest(root: str | os.PathLike, packages: tuple[str, ...] = ("kernels", "perf")) -> str:
    """A digest of the measured code (the .py files of ``packages`` under ``root``): equal digests are the same
    code where git cannot say (a run saved from a dirty tree or outside a repository)."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted(Path(root, package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def checked_out(repo: str | os.PathLike, shas: dict[str, str], folder: Path) -> Iterator[dict[str, Path]]:
    """Each of ``shas`` ({label: commit}) checked out in ``folder/label``, removed afterwards."""
    trees: dict[str, Path] = {}
    try:
        for label, sha in shas.items():
            trees[label] = add_worktree(repo, sha, folder / label)
        yield trees
    finally:
        for tree in trees.values():
            remove_worktree(repo, tree)
