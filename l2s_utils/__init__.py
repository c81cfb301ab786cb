"""l2s_utils: model merging for long-to-short reasoning (Wu et al. 2025, arXiv 2503.20641).

One subpackage per pipeline stage; a stage imports only the stages before it (README.md in this folder
maps every stage and every merging method to its file):

  organism/   the toy System 1 / System 2 pair: task, traces, prompt, tokenizer, training  (build)
  merge/      checkpoint I/O, method kernels + registry, config, streaming engine, AIM / Sens / ACM  (merge)
  evaluate/   prompts, benchmarks, generation backends, grading, reflection, metrics, cached pipeline  (evaluate)
  study/      profiles, the Study API, notebooks driver + book, analyses, plots, paper numbers, premise  (Study)
  cli.py      the ``l2s`` command
"""

__version__ = "0.1.0"
