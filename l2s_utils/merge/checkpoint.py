"""Checkpoint I/O for Hugging Face models, one tensor at a time. No merging math here.

Reading: safetensors files (single ``model.safetensors`` or sharded with ``model.safetensors.index.json``)
are parsed from their JSON headers; a tensor is read with one ``seek`` + ``readinto`` into a fresh
buffer, so memory holds only the tensors in use (no memory map whose touched pages would count
against the process). Pickle ``*.bin`` weights are refused unless ``allow_pickle=True`` (then loaded
whole with ``torch.load(weights_only=True)``).

Writing: :class:`StreamingWriter` plans the shards from the tensor names, shapes and dtype before any
data exists, writes each shard's header first and then every tensor's bytes as soon as it is computed.
Everything goes into a temporary directory beside the destination that is renamed into place only
when complete, so an interrupted or failed merge never leaves an output that looks finished.

Tied embeddings: a checkpoint whose config says ``tie_word_embeddings: true`` normally has no
``lm_head.weight``. :class:`Checkpoint` can expose a *virtual* ``lm_head.weight`` that reads
``model.embed_tokens.weight`` (``virtual_lm_head=True``), which is how a tied model is merged with an
untied one when the user asks to untie.

Whole models: :func:`fetch_model` resolves a local directory or downloads a hub id (safetensors, configs
and tokenizer only); :func:`load_model` loads a model and its tokenizer with transformers (activation
statistics of the composite merges, and the transformers generation backend).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

SAFE_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_SAFE = {v: k for k, v in SAFE_DTYPES.items()}
DTYPE_NAMES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
    "float32": torch.float32, "fp32": torch.float32,
}
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    "added_tokens.json", "chat_template.jinja", "tokenizer.model",
)
INDEX_NAME = "model.safetensors.index.json"
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe or incompatible. The message names the file/tensor."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Parse a safetensors header. Returns (header dict, byte offset of the data section)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header length)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100_000_000):
                raise CheckpointError(f"{path}: corrupt safetensors header (length {n} for a {size}-byte file)")
            header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None
    data_start = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info.get("data_offsets", (0, -1))
        if info.get("dtype") not in SAFE_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        if not (0 <= b <= e and data_start + e <= size):
            raise CheckpointError(f"{path}: tensor {name!r} lies outside the file (truncated or corrupt)")
    return header, data_start


class Checkpoint:
    """A Hugging Face model directory, read lazily one tensor at a time."""

    def __init__(self, path: str | os.PathLike, *, allow_pickle: bool = False, virtual_lm_head: bool = False):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: model directory not found")
        cfg = self.path / "config.json"
        if not cfg.is_file():
            raise CheckpointError(f"{cfg}: missing config.json")
        try:
            self.config: dict = json.loads(cfg.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg}: not valid JSON ({e})") from None
        self._pickled: dict[str, torch.Tensor] | None = None
        self.tensors: dict[str, TensorInfo] = {}
        self.files: list[Path] = []
        index = self.path / INDEX_NAME
        single = self.path / "model.safetensors"
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: corrupt index ({e})") from None
            for fname in sorted(set(weight_map.values())):
                if not (self.path / fname).is_file():
                    raise CheckpointError(f"{self.path / fname}: shard listed in {INDEX_NAME} is missing")
                self._add_file(self.path / fname)
            missing = set(weight_map) - set(self.tensors)
            if missing:
                raise CheckpointError(f"{index}: tensors {sorted(missing)[:3]} are not in their shards")
        elif single.is_file():
            self._add_file(single)
        else:
            bins = sorted(self.path.glob("*.bin"))
            if not bins:
                raise CheckpointError(f"{self.path}: no model.safetensors, {INDEX_NAME} or *.bin weights")
            if not allow_pickle:
                raise CheckpointError(
                    f"{self.path}: only pickle weights ({bins[0].name}); pickle can run code when loaded. "
                    "Convert to safetensors, or pass allow_pickle=True (--allow-pickle) if you trust the source."
                )
            self._load_pickle(bins)
        self.virtual_lm_head = virtual_lm_head and LM_HEAD not in self.tensors and EMBED in self.tensors

    def _add_file(self, f: Path) -> None:
        header, start = read_safetensors_header(f)
        self.files.append(f)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            self.tensors[name] = TensorInfo(name, f, SAFE_DTYPES[info["dtype"]], tuple(info["shape"]), start + b, e - b)

    def _load_pickle(self, bins: list[Path]) -> None:
        self._pickled = {}
        for b in bins:
            sd = torch.load(b, map_location="cpu", weights_only=True)
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


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------

_FP_CACHE = Path(os.environ.get("L2S_CACHE", Path.home() / ".cache" / "l2s")) / "fingerprints.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised by (absolute path, size, mtime) in ~/.cache/l2s/fingerprints.json."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(_FP_CACHE.read_text())
    except (OSError, json.JSONDecodeError):
        memo = {}
    if key in memo:
        return memo[key]
    h = hashlib.sha256()
    buf = bytearray(1 << 20)  # one reused buffer: hashing a 15 GB shard allocates nothing per read
    view = memoryview(buf)
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    digest = h.hexdigest()
    memo[key] = digest
    try:
        _FP_CACHE.parent.mkdir(parents=True, exist_ok=True)
        tmp = _FP_CACHE.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, _FP_CACHE)
    except OSError:
        pass
    return digest


def model_fingerprint(path: str | os.PathLike) -> dict:
    """sha256 of every weight file and of config.json, plus one combined digest (``sha256``)."""
    p = Path(path)
    files = sorted([*p.glob("*.safetensors"), *p.glob("*.bin"), p / "config.json"])
    per = {f.name: file_sha256(f) for f in files if f.is_file()}
    combined = hashlib.sha256(json.dumps(per, sort_keys=True).encode()).hexdigest()
    return {"path": str(p), "sha256": combined, "files": per}


# ---------------------------------------------------------------------------------------------
# Whole models: hub ids, transformers loading (for statistics and generation)
# ---------------------------------------------------------------------------------------------


def fetch_model(ref: str) -> Path:
    """A local model directory for ``ref``; hub ids are downloaded (safetensors, configs, tokenizer only)."""
    p = Path(ref)
    if p.exists():
        return p
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(ref, allow_patterns=["*.safetensors", "*.json", "*.txt", "*.jinja", "*.model"]))
        except Exception as e:  # network errors, missing repos
            raise CheckpointError(f"{ref}: not a local directory and could not be fetched from the hub ({e})") from None
    raise CheckpointError(f"{ref}: model directory not found")


def load_model(path: str | os.PathLike, device: str | None = None, dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tok


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


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
        self.out = Path(out)
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
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        return self

    def _open_next(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._shard_i += 1
        self._names = [t.name for t in self.shards[self._shard_i]]
        self._pos = 0
        self._fh = open(self._tmp / self._shard_name(self._shard_i), "wb")
        hdr = _encode_header(self.shards[self._shard_i], self.metadata)
        self._fh.write(hdr)
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
            self._fh.write(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
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
        target.write_bytes(content.encode() if isinstance(content, str) else content)

    def copy_file(self, src: Path, name: str | None = None) -> None:
        shutil.copy2(src, self._tmp / (name or src.name))

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._fh is not None:
            self._fh.close()
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        if self._shard_i != len(self.shards) - 1 or self._pos != len(self._names):
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise RuntimeError("StreamingWriter closed before every planned tensor was written")
        if len(self.shards) > 1:
            index = {
                "metadata": {"total_size": sum(t.nbytes for s in self.shards for t in s)},
                "weight_map": {t.name: self._shard_name(i) for i, s in enumerate(self.shards) for t in s},
            }
            (self._tmp / INDEX_NAME).write_text(json.dumps(index, indent=2))
        if self.out.exists():
            trash = self.out.parent / f".{self.out.name}.old-{int(time.time() * 1e6)}"
            os.replace(self.out, trash)
            os.replace(self._tmp, self.out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self._tmp, self.out)


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
