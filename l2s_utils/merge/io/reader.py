"""Reading checkpoints one tensor at a time, the pickle policy, and read-ahead on a background thread.

Safetensors files (single ``model.safetensors`` or sharded with ``model.safetensors.index.json``) are
parsed from their JSON headers (``format.py``), a sharded index checked against its shards (every tensor
in exactly one shard, no entry outside the model directory); a tensor is read with one ``seek`` +
``readinto`` into a fresh or reused buffer, so memory holds only the tensors in use (no memory map whose
touched pages would count against the process).

Pickle: one policy for every loader (:func:`check_weights_policy`, also applied by ``hub.load_model``
before transformers opens anything): pickle-only weights are refused unless ``allow_pickle is True``
(then loaded whole with ``torch.load(weights_only=True)``).

Tied embeddings: a checkpoint whose config says ``tie_word_embeddings: true`` normally has no
``lm_head.weight``. :class:`Checkpoint` can expose a *virtual* ``lm_head.weight`` that reads
``model.embed_tokens.weight`` (``virtual_lm_head=True``), which is how a tied model is merged with an
untied one when the user asks to untie.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import torch

from .format import (
    EMBED, INDEX_NAME, LM_HEAD, SAFE_DTYPES, CheckpointError, TensorInfo, read_json_object, read_safetensors_header,
)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_HINT = ("pickle can run code when loaded. Convert to safetensors, or, if you trust the source, pass "
               "--allow-pickle (l2s merge, l2s eval) or set allow_pickle: true (merge config, study profile)")


def check_weights_policy(path: str | os.PathLike, allow_pickle: bool = False) -> None:
    """The project's one pickle policy, applied before anything (transformers included) opens a model.

    A directory with safetensors weights passes. One with only pickle weights (``*.bin``, ``*.pt``, ...)
    is refused unless ``allow_pickle is True`` (a real boolean: the string "false" is not permission).
    """
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: model directory not found")
    if (p / INDEX_NAME).is_file() or (p / "model.safetensors").is_file():
        return
    pickles = sorted(f for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES and f.is_file())
    if not pickles:
        raise CheckpointError(f"{p}: no model.safetensors, {INDEX_NAME} or *.bin weights")
    if allow_pickle is not True:
        raise CheckpointError(f"{p}: only pickle weights ({pickles[0].name}); {PICKLE_HINT}")


class Checkpoint:
    """A Hugging Face model directory, read lazily one tensor at a time."""

    def __init__(self, path: str | os.PathLike, *, allow_pickle: bool = False, virtual_lm_head: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: model directory not found")
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise CheckpointError(f"{cfg}: missing config.json")
        self.config: dict = read_json_object(cfg)
        self._pickled: dict[str, torch.Tensor] | None = None
        self.tensors: dict[str, TensorInfo] = {}
        self.files: list[Path] = []
        index = self.path / INDEX_NAME
        single = self.path / "model.safetensors"
        if index.is_file():
            self._add_index(index)
        elif single.is_file():
            self._add_file(single)
        else:
            check_weights_policy(self.path, allow_pickle)
            self._load_pickle(sorted(self.path.glob("*.bin")) or sorted(
                f for f in self.path.iterdir() if f.suffix in PICKLE_SUFFIXES))
        self.virtual_lm_head = virtual_lm_head and LM_HEAD not in self.tensors and EMBED in self.tensors

    def _add_index(self, index: Path) -> None:
        """A sharded checkpoint, its index checked against its shards (every tensor in exactly one shard)."""
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index}: corrupt index ('weight_map' must map tensor names to shard files)")
        for name, fname in weight_map.items():
            if fname in ("", ".", "..") or Path(fname).name != fname or "\\" in fname:
                raise CheckpointError(f"{index}: tensor {name!r} points to {fname!r}, outside the model directory")
        for fname in sorted(set(weight_map.values())):
            if not (self.path / fname).is_file():
                raise CheckpointError(f"{self.path / fname}: shard listed in {INDEX_NAME} is missing")
            for name, info in self._add_file(self.path / fname).items():
                if weight_map.get(name) != fname:
                    where = f"maps it to {weight_map[name]!r}" if name in weight_map else "does not list it"
                    raise CheckpointError(f"{self.path / fname}: holds tensor {name!r} but {INDEX_NAME} {where}")
        missing = sorted(set(weight_map) - set(self.tensors))
        if missing:
            raise CheckpointError(f"{index}: tensor {missing[0]!r} is not in its shard {weight_map[missing[0]]!r}"
                                  f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")

    def _add_file(self, f: Path) -> dict[str, TensorInfo]:
        header, start = read_safetensors_header(f)
        self.files.append(f)
        added = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if name in self.tensors:
                raise CheckpointError(f"{f}: tensor {name!r} is also in {self.tensors[name].file.name} "
                                      "(a tensor must be in exactly one shard)")
            b, e = info["data_offsets"]
            added[name] = self.tensors[name] = TensorInfo(name, f, SAFE_DTYPES[info["dtype"]], tuple(info["shape"]),
                                                          start + b, e - b)
        return added

    def _load_pickle(self, bins: list[Path]) -> None:
        self._pickled = {}
        for b in bins:
            try:
                sd = torch.load(b, map_location="cpu", weights_only=True)
            except Exception as e:  # weights_only refuses code; corrupt archives
                raise CheckpointError(f"{b}: cannot be loaded as plain tensors ({str(e).splitlines()[0][:200]})") from None
            if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
                raise CheckpointError(f"{b}: not a state dict of tensors")
            self._pickled.update(sd)
            self.files.append(b)
        for name, t in self._pickled.items():
            self.tensors[name] = TensorInfo(name, bins[0], t.dtype, tuple(t.shape), 0, t.numel() * t.element_size())

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False)) or (
            LM_HEAD not in self.tensors and EMBED in self.tensors
        )

    def names(self) -> list[str]:
        names = list(self.tensors)
        if self.virtual_lm_head:
            names.append(LM_HEAD)
        return names

    def info(self, name: str) -> TensorInfo:
        if name == LM_HEAD and self.virtual_lm_head:
            return self.tensors[EMBED]
        try:
            return self.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor {name!r}") from None

    def get(self, name: str, dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu",
            rows: tuple[int, int] | None = None, out: torch.Tensor | None = None,
            scratch: torch.Tensor | None = None) -> torch.Tensor:
        """Read one tensor, or only its rows [r0, r1) along dim 0 (converted to ``dtype``, on ``device``).

        ``out`` (a flat ``dtype`` CPU tensor) and ``scratch`` (a flat uint8 CPU tensor) are reusable buffers:
        when the requested rows fit, the file's bytes are read into ``scratch`` (or straight into ``out`` when
        no conversion is needed), converted into ``out``, and a view of ``out`` is returned -- nothing is
        allocated. The view is only valid until the buffers are reused. Rows that do not fit are read into
        fresh memory as without buffers.
        """
        info = self.info(name)
        shape = info.shape
        if rows is not None:
            shape = (rows[1] - rows[0], *shape[1:])
        n = 1
        for s in shape:
            n *= s
        want = dtype or info.dtype
        use_out = out is not None and out.dtype == want and out.numel() >= n and str(device) == "cpu"
        if self._pickled is not None:
            t = self._pickled[info.name]
            if rows is not None:
                t = t[rows[0]:rows[1]]
            if use_out:
                return out[:n].view(shape).copy_(t)
        else:
            start, nbytes = info.start, info.nbytes
            if rows is not None:
                row_bytes = info.nbytes // info.shape[0] if info.shape and info.shape[0] else 0
                start, nbytes = info.start + rows[0] * row_bytes, (rows[1] - rows[0]) * row_bytes
            if nbytes == 0:
                t = torch.empty(shape, dtype=info.dtype)
            else:
                if use_out and info.dtype == want:
                    raw = out.view(torch.uint8)[:nbytes]
                elif use_out and scratch is not None and scratch.numel() >= nbytes:
                    raw = scratch[:nbytes]
                else:
                    raw = torch.empty(nbytes, dtype=torch.uint8)
                    use_out = False
                with open(info.file, "rb") as f:
                    f.seek(start)
                    if f.readinto(memoryview(raw.numpy())) != nbytes:
                        raise CheckpointError(f"{info.file}: tensor {name!r} is truncated")
                t = raw.view(info.dtype).view(shape)
                if use_out:
                    if info.dtype == want:
                        return t
                    return out[:n].view(shape).copy_(t)
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        return t.to(device) if str(device) != "cpu" else t

    def weight_bytes(self) -> int:
        return sum(i.nbytes for i in self.tensors.values())



def iter_with_prefetch(items: Iterable, fn, depth: int = 2) -> Iterator:
    """Yield fn(item) for each item, computing up to ``depth`` ahead on a background thread (I/O overlap)."""
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    with ThreadPoolExecutor(max_workers=1) as ex:
        futures = [ex.submit(fn, it) for it in items[:depth]]
        for i in range(len(items)):
            res = futures[i].result()
            nxt = i + depth
            if nxt < len(items):
                futures.append(ex.submit(fn, items[nxt]))
            futures[i] = None  # free
            yield res
