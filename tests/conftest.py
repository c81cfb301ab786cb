"""Shared fixtures: tiny Qwen2 checkpoints written with save_pretrained (safetensors)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("L2S_CACHE", str(Path(__file__).parent / ".cache-l2s"))


def make_qwen2(path: Path, *, seed: int, tie: bool = False, base: Path | None = None, noise: float = 0.02,
               vocab: int = 96, hidden: int = 32, layers: int = 2, dtype=torch.float32, shard: str | None = None) -> Path:
    """A tiny Qwen2ForCausalLM. With ``base``, its weights are base + noise (a 'fine-tuned' model)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    if base is not None:
        from transformers import AutoModelForCausalLM

        ref = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        sd = {k: v + noise * torch.randn(v.shape, generator=g) for k, v in ref.state_dict().items()}
        model.load_state_dict(sd, strict=False)
        if tie:
            model.tie_weights()
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kwargs)
    return path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """base (System 1 stand-in), two fine-tuned models, tied variants and a sharded bf16 pair."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    out["base"] = make_qwen2(root / "base", seed=0)
    out["ft1"] = make_qwen2(root / "ft1", seed=1, base=out["base"])
    out["ft2"] = make_qwen2(root / "ft2", seed=2, base=out["base"])
    out["tied_base"] = make_qwen2(root / "tied_base", seed=3, tie=True)
    out["tied_ft"] = make_qwen2(root / "tied_ft", seed=4, tie=True, base=out["tied_base"])
    out["untied_ft"] = make_qwen2(root / "untied_ft", seed=5, tie=False, base=out["tied_base"])
    out["bf16_base"] = make_qwen2(root / "bf16_base", seed=6, dtype=torch.bfloat16, shard="20KB")
    out["bf16_ft"] = make_qwen2(root / "bf16_ft", seed=7, base=out["bf16_base"], dtype=torch.bfloat16, shard="20KB")
    return out
