"""The repository's git facts that records and pages cite: the commit checked out (and whether the work tree has
changes) and the date of the commit that last changed a file. One place for every ``git`` call of the package;
each returns ``None`` outside a git checkout or without git, never raises."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str, timeout: int = 60) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def head(root: Path = ROOT) -> tuple[str | None, bool | None]:
    """``(commit, dirty)``: the full hash checked out at ``root`` and whether tracked files differ from it
    (``(None, None)`` outside git; ``dirty`` is ``None`` when the status could not be read)."""
    sha = _git(root, "rev-parse", "HEAD", timeout=20)
    if sha is None:
        return None, None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return sha, (bool(status) if status is not None else None)


def describe(root: Path = ROOT) -> str:
    """The commit as a reader sees it: a 10-character hash, "+ local changes" when the work tree differs."""
    sha, dirty = head(root)
    if sha is None:
        return "unknown (not a git checkout, or git not available)"
    return sha[:10] + (" + local changes" if dirty else "")


def file_date(path: Path, root: Path = ROOT) -> str | None:
    """The date (YYYY-MM-DD) of the commit that last changed ``path``, ``None`` if it was never committed."""
    return _git(root, "log", "-1", "--format=%cs", "--", str(path), timeout=20) or None
