"""Stage 4, study: profile -> models -> merge -> generate -> grade -> summarize -> notebooks -> book.

    from l2s_utils.study import Study
    st = Study("toy")                                  # validated profile, output under runs/toy
    rows = st.evaluate(st.merged("ties"), "TIES")      # merged (cached), generated (cached), graded
    table = st.summary(rows)

Files:
  profiles.py   study profiles (data/profiles/*.yaml), validated on load
  study.py      the Study API that the notebooks call (every stage cached by its inputs)
  driver.py     ``l2s study``: build the models, execute the notebooks (papermill), build the book
  chapters.py   the chapter list (book/_toc.yml) and ``setup``, which a notebook's set-up cell calls
  analysis.py   task-vector spectra, self-correction statistics
  plots.py      the book's figures
  contenders.py what the study compares: a model plus a decoding policy (the profile's contenders block)
  baselines.py  trained long-to-short baselines (TLDR-style GRPO, SelfBudgeter, DPO; TRL), cached
  paper.py      the paper's numbers: model pairs, Table 7 merge configs, reported results side by side
  premise.py    the organism's premise report (here because it generates and grades)
  reader.py     what the book's reader sees: readable tables, captions, provenance box, Colab links
  verdict.py    the verdict box of every page: the paper's claim, this run's number, reproduced or not and why

``Study``, ``side_by_side`` and ``paper_summary`` are loaded on first use, so importing a submodule
(e.g. ``l2s_utils.study.profiles``) stays light.
"""

import warnings

# tqdm.auto warns on import in a notebook kernel without ipywidgets; the study shows no progress bars there
warnings.filterwarnings("ignore", message="IProgress not found")

__all__ = ["Study", "paper_summary", "side_by_side"]


def __getattr__(name: str):
    if name == "Study":
        from .study import Study

        return Study
    if name in ("paper_summary", "side_by_side"):
        from . import paper

        return getattr(paper, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
