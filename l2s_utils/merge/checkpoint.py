"""Checkpoint I/O for Hugging Face models, one tensor at a time: the public names, one import away. No merging math.

The code lives in ``merge/io/``, one module per job:

  format.py   the safetensors format: dtype tables, shared names, header parsing and validation, JSON objects
  reader.py   :class:`Checkpoint` (lazy, row ranges, reused buffers), the pickle policy, read-ahead thread
  hub.py      hub ids (:func:`fetch_model`), fingerprints (sha256), whole models with transformers
  output.py   :class:`claim_output`: one writer per OUT, OUT never an input, stale partial outputs cleaned
  writer.py   :class:`StreamingWriter`: sharded safetensors written tensor by tensor, atomically

Other stages import checkpoint I/O from here (``from l2s_utils.merge.checkpoint import Checkpoint``).
"""

from .io.format import (
    DTYPE_NAMES, EMBED, INDEX_NAME, LM_HEAD, TOKENIZER_FILES, CheckpointError, read_json_object, read_safetensors_header,
)
from .io.hub import fetch_model, file_sha256, load_model, model_fingerprint
from .io.output import OutputError, claim_output
from .io.reader import Checkpoint, check_weights_policy, iter_with_prefetch
from .io.writer import PlannedTensor, StreamingWriter

__all__ = [
    "DTYPE_NAMES", "EMBED", "INDEX_NAME", "LM_HEAD", "TOKENIZER_FILES", "CheckpointError", "read_json_object",
    "read_safetensors_header", "fetch_model", "file_sha256", "load_model", "model_fingerprint", "OutputError",
    "claim_output", "Checkpoint", "check_weights_policy", "iter_with_prefetch", "PlannedTensor", "StreamingWriter",
]
