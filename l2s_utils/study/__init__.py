"""Stage 4, study: profiles, the Study API, notebooks and the book.

    from l2s_utils.study import Study
    st = Study("toy")
"""

from .study import Study, paper_summary, side_by_side

__all__ = ["Study", "paper_summary", "side_by_side"]
