"""YAML for configs and profiles: the safe loader (no tags, no code), duplicate keys refused.

PyYAML silently keeps the last of two equal keys; a config that says ``k: 0.2`` and later ``k: 0.8``
is almost certainly a mistake, so :func:`load` raises instead, naming the key and its line.
"""

from __future__ import annotations

import yaml


class DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if dup:
                raise DuplicateKeyError("while constructing a mapping", node.start_mark,
                                        f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str):
    """``yaml.safe_load`` that refuses duplicate keys (raises a ``yaml.YAMLError`` naming key and line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def one_line(e: yaml.YAMLError) -> str:
    """A YAML error as one line: the problem and where (PyYAML's own message spans several lines)."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if not problem:
        return " ".join(str(e).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"
