"""Writing a sharded safetensors checkpoint tensor by tensor, atomically.

:class:`StreamingWriter` plans the shards from the tensor names, shapes and dtype before any data exists,
writes each shard's header first and then every tensor's bytes as soon as it is computed. Everything goes
into a temporary directory beside the destination that is renamed into place only when complete (and
never onto an OUT that appeared meanwhile), so an interrupted or failed merge never leaves an output
that looks finished.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .format import INDEX_NAME, TORCH_TO_SAFE
from .output import OutputError, rename_noreplace, umask

@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Greedy shards in the given order, each at most ``max_shard_bytes`` (a larger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _encode_header(shard: list[PlannedTensor], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata}
    off = 0
    for t in shard:
        header[t.name] = {"dtype": TORCH_TO_SAFE[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class StreamingWriter:
    """Write a sharded safetensors checkpoint tensor by tensor, atomically.

    Usage::

        with StreamingWriter(out, plan, overwrite=False) as w:
            for name in w.order:            # tensors must be written in plan order
                w.write(name, tensor)
            w.add_file("config.json", text)
        # only now does ``out`` exist
    """

    def __init__(self, out: str | os.PathLike, plan: list[PlannedTensor], *, max_shard_bytes: int = 2 << 30,
                 overwrite: bool = False, metadata: dict[str, str] | None = None):
        self.out = Path(os.path.abspath(out))
        if self.out.exists() and not overwrite:
            raise FileExistsError(f"{self.out} already exists; pass overwrite=True (--overwrite) to replace it")
        if self.out.exists() and not self.out.is_dir():
            raise FileExistsError(f"{self.out} exists and is not a directory")
        self.overwrite = overwrite
        self.shards = plan_shards(plan, max_shard_bytes)
        self.order = [t.name for s in self.shards for t in s]
        self.metadata = {"format": "pt", **(metadata or {})}
        self.bytes_written = 0
        self._tmp: Path | None = None
        self._fh = None
        self._shard_i = -1
        self._pos = 0
        self._names: list[str] = []
        self._partial = 0

    def _shard_name(self, i: int) -> str:
        n = len(self.shards)
        return "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"

    def __enter__(self) -> "StreamingWriter":
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
            os.chmod(self._tmp, 0o777 & ~umask())  # mkdtemp makes 0700; a model directory is shared like any other
        except OSError as e:
            raise OutputError(f"{self.out.parent}: cannot write the output here ({e.strerror})") from None
        return self

    def _io(self, what: str, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            raise OutputError(f"{self.out}: writing {what} failed ({e.strerror or e})") from None

    def _open_next(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._shard_i += 1
        self._names = [t.name for t in self.shards[self._shard_i]]
        self._pos = 0
        self._fh = self._io(self._shard_name(self._shard_i), open, self._tmp / self._shard_name(self._shard_i), "wb")
        hdr = _encode_header(self.shards[self._shard_i], self.metadata)
        self._io(self._shard_name(self._shard_i), self._fh.write, hdr)
        self.bytes_written += len(hdr)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write a whole tensor, or the next consecutive rows of it (row chunks of a large tensor)."""
        if self._fh is None or self._pos == len(self._names):
            self._open_next()
        expected = self.shards[self._shard_i][self._pos]
        if name != expected.name:
            raise RuntimeError(f"tensors must be written in plan order: expected {expected.name!r}, got {name!r}")
        whole = tuple(tensor.shape) == expected.shape
        part = expected.shape and tuple(tensor.shape[1:]) == expected.shape[1:]
        if tensor.dtype != expected.dtype or not (whole or part):
            raise RuntimeError(f"{name}: planned {expected.shape}/{expected.dtype}, got {tuple(tensor.shape)}/{tensor.dtype}")
        t = tensor.detach().to("cpu").contiguous()
        if t.numel():
            self._io(self._shard_name(self._shard_i), self._fh.write, memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        n = t.numel() * t.element_size()
        self._partial += n
        self.bytes_written += n
        if self._partial > expected.nbytes:
            raise RuntimeError(f"{name}: more rows written than planned")
        if self._partial == expected.nbytes:
            self._partial = 0
            self._pos += 1

    def add_file(self, name: str, content: str | bytes) -> None:
        target = self._tmp / name
        self._io(name, target.write_bytes, content.encode() if isinstance(content, str) else content)

    def copy_file(self, src: Path, name: str | None = None) -> None:
        self._io(name or src.name, shutil.copyfile, src, self._tmp / (name or src.name))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._finish(exc_type)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    def _finish(self, exc_type) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            self._io(self._shard_name(self._shard_i), fh.close)  # a full disk may surface only here
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        if self._shard_i != len(self.shards) - 1 or self._pos != len(self._names):
            raise RuntimeError("StreamingWriter closed before every planned tensor was written")
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(t.nbytes for s in self.shards for t in s)},
                "weight_map": {t.name: self._shard_name(i) for i, s in enumerate(self.shards) for t in s},
            }
            self.add_file(INDEX_NAME, json.dumps(index, indent=2))
        if self.out.exists() and self.overwrite:
            trash = self.out.parent / f".{self.out.name}.old-{int(time.time() * 1e6)}"
            os.replace(self.out, trash)
            os.replace(self._tmp, self.out)
            shutil.rmtree(trash, ignore_errors=True)
            return
        try:  # exclusive: never replaces an OUT that appeared meanwhile
            rename_noreplace(self._tmp, self.out)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(f"{self.out} appeared while this merge was running (another process wrote "
                                      "it); it was left as it is and this result discarded") from None
            raise OutputError(f"{self.out}: cannot move the finished output into place ({e.strerror})") from None
