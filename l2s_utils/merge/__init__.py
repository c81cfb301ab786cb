"""Stage 2, merge: checkpoints in, one merged checkpoint out (streamed, fp32, written atomically).

    from l2s_utils.merge import merge
    result = merge("data/configs/qwen-7b/ties.yaml", "merged/ties-7b")   # or a dict in the same shape

Files:
  checkpoint.py   checkpoint I/O's public names, re-exported from io/ (one module per job: format, reader, hub,
                  output, writer): streamed safetensors reading/writing, fingerprints, hub ids, whole-model loading
  config.py       mergekit-style YAML -> validated MergeConfig
  engine.py       the streaming engine: ``merge(config, out)``
  methods/        one file per method family (basic, ties, dare, svd, mergekit) + registry.py (every fact
                  about a method: names, parameters, display name, style, hooks)
  activation.py   activation / gradient statistics and formulas of AIM, Sens-Merging, ACM
  calibration.py  their calibration data (organism triples or s1K)
  composite.py    runs AIM / ACM / Sens through the engine; registers them

Importing this package registers every method (composite ones included), so ``REGISTRY`` is complete.
"""

from . import composite  # noqa: F401  (registers the composite methods aim, acm, sens)
from .checkpoint import CheckpointError
from .config import MergeConfig, load_config
from .engine import MergeResult, merge
from .methods import REGISTRY, MergeConfigError, all_methods, get_method

__all__ = ["merge", "load_config", "MergeConfig", "MergeResult", "MergeConfigError", "CheckpointError", "REGISTRY",
           "all_methods", "get_method"]
