"""The safetensors format: dtype tables, the names every checkpoint shares, header parsing and validation.

A safetensors file is an 8-byte little-endian header length n, a JSON header of n bytes (per tensor:
dtype, shape, data_offsets [begin, end] relative to the data section; optional ``__metadata__``) and the
data section. :func:`read_safetensors_header` validates a header as strictly as the safetensors library.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

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
