"""Whole models: hub ids, fingerprints (sha256 of the weight files), loading with transformers.

:func:`fetch_model` resolves a local directory or downloads a hub id (safetensors, configs and tokenizer
only); :func:`load_model` loads a model and its tokenizer with transformers (activation statistics of the
composite merges, and the transformers generation backend), the pickle policy applied first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch

from .format import CheckpointError
from .reader import check_weights_policy

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
