"""Checkpoint I/O, one module per job (see ``l2s_utils/merge/checkpoint.py``, which re-exports the public names)."""
