"""Stage 3, evaluate: generate, grade and summarize.

    from l2s_utils.evaluate import evaluate
    rows = evaluate("merged/ties-7b", "math500", limit=50)
"""


def __getattr__(name: str):
    if name == "evaluate":
        from .pipeline import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
