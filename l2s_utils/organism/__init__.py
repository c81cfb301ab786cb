"""Stage 1, organism: the toy System 1 / System 2 pair.

    from l2s_utils.organism import build
    org = build("s")          # trained on first use, then loaded from the cache
"""


def __getattr__(name: str):
    if name == "build":
        from .training import build

        return build
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
