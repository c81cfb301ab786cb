"""Output claims: one writer per OUT, OUT never an input, stale partial outputs cleaned, no-replace renames.

:class:`claim_output` gives one writer per OUT for the whole merge (a ``flock`` beside it), refuses an
OUT that is or contains an input, and cleans the partial outputs of killed runs;
:func:`rename_noreplace` moves a finished output into place only if nothing appeared there meanwhile.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Iterable

class OutputError(ValueError):
    """OUT cannot be claimed or written (busy, an input, unwritable, disk full). The message names the path."""


_CLAIMS: dict[str, int] = {}  # OUT paths this process holds -> nesting depth (a composite merge re-enters)


def umask() -> int:
    m = os.umask(0o22)
    os.umask(m)
    return m


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_target(out: Path, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an OUT that is (or contains) an input, the current directory or a file system root."""
    real = Path(os.path.realpath(out))
    if out.name in ("", ".", "..") or real == Path(real.anchor):
        raise OutputError(f"{out}: not usable as an output directory (name a new directory)")
    if _within(Path(os.path.realpath(os.getcwd())), real):
        raise OutputError(f"{out}: is the current directory or contains it; name a new directory")
    for inp in inputs:
        if inp is None or not os.path.exists(inp):
            continue
        if _within(Path(os.path.realpath(inp)), real):
            raise OutputError(f"{out}: is (or contains) the input {inp}; an output may never replace an input")


class claim_output:
    """Claim OUT for writing: an exclusive lock beside it, held until the merge ends.

    ``with claim_output(out, overwrite=False, inputs=[...]) as out: ...`` refuses an OUT that is an input
    (or contains one), that another process is writing (its lock is held) or that exists (unless
    ``overwrite``); removes partial outputs that killed runs left beside OUT (reported as a warning);
    creates OUT's missing parents and, if the merge fails, removes those of them that stay empty.
    The lock is ``flock``-based, so a killed writer never leaves a lock that blocks the next run.
    Re-entrant within one process (a composite merge drives the engine into the same OUT).
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable = ()):
        self.out = Path(os.path.abspath(out))
        self.overwrite = overwrite
        self.inputs = list(inputs)
        self.key = str(self.out)
        self._fd: int | None = None
        self._created: list[Path] = []

    def __enter__(self) -> Path:
        if self.key in _CLAIMS:
            _CLAIMS[self.key] += 1
            return self.out
        check_output_target(self.out, self.inputs)
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: exists and is not a directory")
        if self.out.exists() and not self.overwrite:
            raise FileExistsError(f"{self.out} already exists; pass overwrite=True (--overwrite) to replace it")
        p = self.out.parent
        while not p.exists():
            self._created.append(p)
            p = p.parent
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._remove_created()
            raise OutputError(f"{self.out.parent}: cannot create the output's parent directory ({e.strerror})") from None
        try:
            self._lock()
            if self.out.exists() and not self.overwrite:  # it appeared before we held the lock
                raise FileExistsError(f"{self.out} already exists; pass overwrite=True (--overwrite) to replace it")
            self._clean_stale()
        except BaseException:
            self._release(failed=True)
            raise
        _CLAIMS[self.key] = 1
        return self.out

    def __exit__(self, exc_type, exc, tb) -> None:
        _CLAIMS[self.key] -= 1
        if _CLAIMS[self.key]:
            return
        del _CLAIMS[self.key]
        self._release(failed=exc_type is not None)

    @property
    def lock_path(self) -> Path:
        return self.out.parent / f".{self.out.name}.lock"

    def _lock(self) -> None:
        lock = self.lock_path
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise OutputError(f"{self.out.parent}: cannot write the output here ({e.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise OutputError(f"{lock}: cannot lock ({e.strerror})") from None
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputError(f"{self.out}: another process (pid {holder}) is writing this output now; "
                                  "wait for it to finish or choose another OUT") from None
            try:  # the file we locked must still be the one at the path (a finishing writer unlinks it)
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                self._fd = fd
                return
            os.close(fd)

    def _clean_stale(self) -> None:
        """Partial outputs beside OUT can only be left by killed runs: nobody else may write OUT now."""
        n = self.out.name
        stale = sorted({*self.out.parent.glob(f".{glob_escape(n)}.partial-*"),
                        *self.out.parent.glob(f".{glob_escape(n)}.old-*"),
                        *self.out.parent.glob(f".{glob_escape(n)}.inner-*"),
                        *self.out.parent.glob(f"..{glob_escape(n)}.inner-*")})
        for s in stale:
            if s.is_dir() and not s.is_symlink():
                shutil.rmtree(s, ignore_errors=True)
            else:
                s.unlink(missing_ok=True)
        if stale:
            import warnings

            warnings.warn(f"{self.out}: removed {len(stale)} partial output(s) left by an interrupted run: "
                          f"{', '.join(s.name for s in stale)}", stacklevel=3)

    def _release(self, failed: bool) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.lock_path)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if failed:
            self._remove_created()

    def _remove_created(self) -> None:
        for p in self._created:  # deepest first
            try:
                p.rmdir()
            except OSError:
                break


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


def rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails if ``dst`` exists (renameat2 RENAME_NOREPLACE; a checked rename where unsupported)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        AT_FDCWD, RENAME_NOREPLACE = -100, 1
        if renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(dst))
    if dst.exists() or dst.is_symlink():
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)
