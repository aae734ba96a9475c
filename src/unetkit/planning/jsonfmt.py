"""JSON text a person can read and edit: objects one key per line, short lists on one line.

``json.dumps(indent=2)`` puts every number of a kernel-size list on its own line, which makes
plans.json ten times longer than it needs to be. Here a list of numbers (or of short lists of
numbers) stays on one line when it fits in ``width`` characters.
"""

from __future__ import annotations

import json
from typing import Any

from unetkit.utils.atomic import atomic_write_text, to_jsonable


def _is_flat(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)


def dumps(obj: Any, indent: int = 2, width: int = 100) -> str:
    """Serialize ``obj`` (numpy values converted) to readable JSON text (no trailing newline)."""
    def render(value: Any, level: int) -> str:
        pad = " " * (indent * (level + 1))
        end = " " * (indent * level)
        if isinstance(value, dict):
            if not value:
                return "{}"
            items = [f"{pad}{json.dumps(str(k))}: {render(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + end + "}"
        if isinstance(value, list):
            if not value:
                return "[]"
            if _is_flat(value) or all(_is_flat(v) for v in value):
                one_line = json.dumps(value, separators=(", ", ": "))
                if len(one_line) + len(pad) <= width:
                    return one_line
            if all(_is_flat(v) for v in value):
                return "[\n" + ",\n".join(pad + json.dumps(v, separators=(", ", ": ")) for v in value) + "\n" + end + "]"
            return "[\n" + ",\n".join(pad + render(v, level + 1) for v in value) + "\n" + end + "]"
        return json.dumps(value, allow_nan=True)

    return render(to_jsonable(obj), 0)


def write_readable_json(path, obj: Any) -> None:
    """Write ``obj`` atomically as readable JSON (see :func:`dumps`)."""
    atomic_write_text(path, dumps(obj) + "\n")
