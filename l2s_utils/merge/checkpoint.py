"""Checkpoint I/O for Hugging Face models, one tensor at a time. No merging math here.

Reading: safetensors files (single ``model.safetensors`` or sharded with ``model.safetensors.index.json``)
are parsed from their JSON headers, validated as strictly as the safetensors library (and a sharded
index against its shards: every tensor in exactly one shard, no entry outside the model directory);
a tensor is read with one ``seek`` + ``readinto`` into a fresh buffer, so memory holds only the tensors
in use (no memory map whose touched pages would count against the process).

Pickle: one policy for every loader (:func:`check_weights_policy`, also applied by :func:`load_model`
before transformers opens anything): pickle-only weights are refused unless ``allow_pickle is True``
(then loaded whole with ``torch.load(weights_only=True)``).

Writing: :class:`StreamingWriter` plans the shards from the tensor names, shapes and dtype before any
data exists, writes each shard's header first and then every tensor's bytes as soon as it is computed.
Everything goes into a temporary directory beside the destination that is renamed into place only
when complete (and never onto an OUT that appeared meanwhile), so an interrupted or failed merge
never leaves an output that looks finished. :class:`claim_output` gives one writer per OUT for the
whole merge (a ``flock`` beside it), refuses an OUT that is or contains an input, and cleans the
partial outputs of killed runs.

Tied embeddings: a checkpoint whose config says ``tie_word_embeddings: true`` normally has no
``lm_head.weight``. :class:`Checkpoint` can expose a *virtual* ``lm_head.weight`` that reads
``model.embed_tokens.weight`` (``virtual_lm_head=True``), which is how a tied model is merged with an
untied one when the user asks to untie.

Whole models: :func:`fetch_model` resolves a local directory or downloads a hub id (safetensors, configs
and tokenizer only); :func:`load_model` loads a model and its tokenizer with transformers (activation
statistics of the composite merges, and the transformers generation backend).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
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
_ITEMSIZE = {k: torch.empty((), dtype=v).element_size() for k, v in SAFE_DTYPES.items()}
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


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _DuplicateKey(k)
        d[k] = v
    return d


class _DuplicateKey(ValueError):
    pass


def _is_uint(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Parse and validate a safetensors header as strictly as the safetensors library.

    Returns (header dict, byte offset of the data section). The header must be a JSON object whose
    entries (other than ``__metadata__``, a str -> str mapping) are objects with a supported ``dtype``,
    a ``shape`` of non-negative integers and ``data_offsets`` [begin, end] covering exactly
    dtype size x prod(shape) bytes; sorted by offset, the tensors tile the data section with no gap
    or overlap, and the data section ends where the last tensor ends. Errors name the file and tensor.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header length)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100_000_000):
                raise CheckpointError(f"{path}: corrupt safetensors header (length {n} for a {size}-byte file)")
            text = f.read(n)
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise CheckpointError(f"{path}: corrupt safetensors header (tensor {e.args[0]!r} appears twice)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    data_start = 8 + n
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise CheckpointError(f"{path}: tensor {name!r}: header entry is a JSON {type(info).__name__}, not an object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFE_DTYPES:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_uint(s) for s in shape):
            raise CheckpointError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs) and offs[0] <= offs[1]):
            raise CheckpointError(f"{path}: tensor {name!r} has invalid data_offsets {offs!r}")
        need = math.prod(shape) * _ITEMSIZE[dtype]
        if offs[1] - offs[0] != need:
            raise CheckpointError(f"{path}: tensor {name!r}: data_offsets cover {offs[1] - offs[0]} bytes but "
                                  f"{dtype} x {shape} needs {need}")
        spans.append((offs[0], offs[1], name))
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            what = "overlaps the previous tensor" if b < pos else f"leaves a gap of {b - pos} bytes before it"
            raise CheckpointError(f"{path}: tensor {name!r} at data offset {b} {what} (corrupt offsets)")
        pos = e
    if data_start + pos != size:
        if data_start + pos > size:
            last = max(spans)[2]
            raise CheckpointError(f"{path}: tensor {last!r} lies outside the file (truncated or corrupt)")
        raise CheckpointError(f"{path}: {size - data_start - pos} bytes after the last tensor (corrupt file)")
    return header, data_start


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


def read_json_object(path: Path, what: str = "") -> dict:
    """A JSON file that must hold an object; one-line errors naming the file."""
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing{' ' + what if what else ''}") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, not a {type(obj).__name__}")
    return obj


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


def load_model(path: str | os.PathLike, device: str | None = None, dtype: torch.dtype | None = None, *,
               allow_pickle: bool = False):
    """A model and its tokenizer with transformers; the pickle policy is applied first (no remote code)."""
    check_weights_policy(path, allow_pickle)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=None if allow_pickle is True else True)
    return model.to(device).eval(), tok


# ---------------------------------------------------------------------------------------------
# Output claims: one writer per OUT, OUT never an input, stale partial outputs cleaned
# ---------------------------------------------------------------------------------------------


class OutputError(ValueError):
    """OUT cannot be claimed or written (busy, an input, unwritable, disk full). The message names the path."""


_CLAIMS: dict[str, int] = {}  # OUT paths this process holds -> nesting depth (a composite merge re-enters)


def _umask() -> int:
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


def _rename_noreplace(src: Path, dst: Path) -> None:
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
            os.chmod(self._tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a model directory is shared like any other
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
            _rename_noreplace(self._tmp, self.out)
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(f"{self.out} appeared while this merge was running (another process wrote "
                                      "it); it was left as it is and this result discarded") from None
            raise OutputError(f"{self.out}: cannot move the finished output into place ({e.strerror})") from None


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
