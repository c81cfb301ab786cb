"""l2s_utils: model merging for long-to-short reasoning (Wu et al. 2025, arXiv 2503.20641).

Modules:
  methods     merging methods as pure tensor functions + the registry
  checkpoint  streamed safetensors reading/writing, fingerprints
  merging     configs and the streaming merge engine (``merge(config, out)``)
  cli         the ``l2s`` command
"""

__version__ = "0.1.0"
