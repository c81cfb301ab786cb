"""Stage 2, merge: checkpoints in, one merged checkpoint out.

    from l2s_utils.merge import merge
    merge("data/configs/qwen-7b/ties.yaml", "merged/ties-7b")
"""

from . import composite  # noqa: F401  (registers the composite methods aim, acm, sens)
from .checkpoint import CheckpointError
from .config import MergeConfig, load_config
from .engine import MergeResult, merge
from .methods import REGISTRY, MergeConfigError, get_method

__all__ = ["merge", "load_config", "MergeConfig", "MergeResult", "MergeConfigError", "CheckpointError", "REGISTRY",
           "get_method"]
