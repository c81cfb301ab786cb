"""Benchmark loaders returning one record type, :class:`Item`.

Real benchmarks come from local JSONL files in the Qwen2.5-Math toolkit format
(``<data_dir>/<name>/test.jsonl``; ``data_dir`` defaults to ``$L2S_DATA_DIR`` or ``./data/benchmarks``)
or, for the ones with a canonical hub copy, by hub id through ``datasets``. Gold answers follow the
toolkit's ``parse_ground_truth`` (METHODS.md section 10):

    gsm8k          answer.split("####")[1]            hub: openai/gsm8k (main, test)
    math500        answer  (level kept)               hub: HuggingFaceH4/MATH-500 (test)
    aime24         answer                             hub: HuggingFaceH4/aime_2024 (train)
    minerva_math   boxed content of solution          local only
    olympiadbench  final_answer[0].strip("$")         local only
    college_math   answer with "$" removed            local only
    toy            the organism's test split (task.py)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .grading import extract_last_boxed

SIZES = {"gsm8k": 1319, "math500": 500, "minerva_math": 272, "olympiadbench": 675, "college_math": 2818, "aime24": 30}
HUB = {"gsm8k": ("openai/gsm8k", "main", "test"), "math500": ("HuggingFaceH4/MATH-500", None, "test"),
       "aime24": ("HuggingFaceH4/aime_2024", None, "train")}
NAMES = (*SIZES, "toy")


@dataclass(frozen=True)
class Item:
    benchmark: str
    id: str
    question: str
    gold: str
    level: int | None = None
    meta: dict = field(default_factory=dict, hash=False, compare=False)


class DatasetMissing(FileNotFoundError):
    pass


def data_dir() -> Path:
    return Path(os.environ.get("L2S_DATA_DIR", Path(__file__).resolve().parents[2] / "data" / "benchmarks"))


def _question(row: dict) -> str:
    for key in ("question", "problem", "Question", "input"):
        if key in row and row[key]:
            q = str(row[key]).strip()
            break
    else:
        raise ValueError(f"row has none of question/problem/Question/input: {sorted(row)[:8]}")
    return q


def _gold(name: str, row: dict) -> str:
    if name == "gsm8k":
        return str(row["answer"]).split("####")[-1].strip().replace(",", "")
    if name in ("aime24", "math500"):
        if "answer" in row and row["answer"] not in (None, ""):
            return str(row["answer"]).strip()
        return extract_last_boxed(row["solution"]) or ""
    if name == "college_math":
        return str(row["answer"]).replace("$", "").strip()
    if name == "olympiadbench":
        fa = row["final_answer"]
        return (fa[0] if isinstance(fa, list) else str(fa)).strip("$").strip()
    if name == "minerva_math":
        gold = extract_last_boxed(row["solution"])
        if gold is None:
            raise ValueError("minerva_math row has no \\boxed answer in its solution")
        return gold
    raise ValueError(f"no gold-answer rule for {name!r}")


def _level(row: dict) -> int | None:
    lv = row.get("level")
    if isinstance(lv, int):
        return lv
    if isinstance(lv, str) and lv.strip().split()[-1].isdigit():
        return int(lv.strip().split()[-1])
    return None


def load_jsonl(path: Path, name: str) -> list[Item]:
    items = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
                items.append(Item(name, str(row.get("idx", row.get("id", row.get("unique_id", i)))), _question(row),
                                  _gold(name, row), _level(row), {k: row[k] for k in ("type", "subject", "subfield") if k in row}))
            except (KeyError, ValueError, TypeError, AttributeError) as e:  # JSON and UTF-8 errors are ValueErrors
                raise ValueError(f"{path}:{i + 1}: cannot read a {name} record ({e})") from None
    if not items:
        raise ValueError(f"{path}: no records")
    return items


def load_benchmark(name: str, *, path: str | os.PathLike | None = None, limit: int | None = None,
                   seed: int = 0, toy_per_level: int = 50, allow_download: bool = True) -> list[Item]:
    """Load a benchmark as a list of :class:`Item` (first ``limit`` records, in file order)."""
    if name not in NAMES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(NAMES)}")
    if name == "toy":
        from ..organism import task as T

        probs = T.make_problems("test", toy_per_level, seed)
        items = [Item("toy", p.id, p.question, str(p.answer), p.level) for p in probs]
        return items[:limit] if limit else items
    local = Path(path) if path else data_dir() / name / "test.jsonl"
    if path and not local.is_file():  # a path given by the user is never silently replaced by a download
        raise DatasetMissing(f"{local}: benchmark file not found (--data)")
    if local.is_file():
        items = load_jsonl(local, name)
    elif name in HUB and allow_download:
        items = _from_hub(name)
    else:
        how = (f"download the Qwen2.5-Math toolkit's evaluation/data/{name}/test.jsonl "
               f"(https://github.com/QwenLM/Qwen2.5-Math) to {local}, or pass --data PATH")
        if name in HUB:
            how += f", or allow the hub download of {HUB[name][0]}"
        raise DatasetMissing(f"benchmark {name!r} not found at {local}: {how}")
    return items[:limit] if limit else items


def _from_hub(name: str) -> list[Item]:
    repo, config, split = HUB[name]
    try:
        import datasets

        ds = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # offline, missing
        raise DatasetMissing(f"benchmark {name!r}: no local file and the hub copy {repo} could not be loaded ({e}). "
                             f"Put a toolkit-format test.jsonl at {data_dir() / name / 'test.jsonl'}") from None
    items = []
    for i, row in enumerate(ds):
        items.append(Item(name, str(row.get("unique_id", row.get("id", i))), _question(row), _gold(name, row), _level(row)))
    return items
