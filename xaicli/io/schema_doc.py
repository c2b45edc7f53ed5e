"""The README's record tables, generated from `record.schema.json` (`make readme`; a test
checks they are current): the arrays by key with their dtypes and shapes, then every
meta field with its JSON type.

    python -m xaicli.io.schema_doc README.md     # rewrite the block between the markers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

from xaicli.io.schema import schema

BEGIN = "<!-- record-schema: generated from xaicli/io/record.schema.json by `make readme`; do not edit -->"
END = "<!-- end record-schema -->"


def markdown() -> str:
    root = schema()
    lines = ["| key | dtype | shape | what |", "| --- | --- | --- | --- |"]
    arrays = root["$defs"]["arrays"]
    members = [*arrays["properties"].items(), *arrays["patternProperties"].items()]
    for key, spec in members:
        props = spec["properties"]
        lines.append(f"| `{spec.get('title', key)}` | {_dtypes(props['dtype'])} | {_resolve(props['shape'], root)['description']} "
                     f"| {spec['description']} |")
    lines += ["", arrays["description"], "", "`meta` fields (any other field is allowed and ignored):", "",
              "| field | type | what |", "| --- | --- | --- |"]
    for path, spec, required in _fields(root, "", root):
        what = spec.get("description", "")
        if required:
            what = "**required**" + (f"; {what}" if what else "")
        lines.append(f"| `{path}` | {_type(spec, root)} | {what} |")
    return "\n".join([BEGIN, *lines, END])


def _fields(spec: dict, prefix: str, root: dict) -> Iterator[tuple[str, dict, bool]]:
    """(path, schema, required) of every named field below `spec`, depth first."""
    spec = _resolve(spec, root)
    required = set(spec.get("required", []))
    for name, sub in spec.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        merged = {**_resolve(sub, root), **{k: v for k, v in sub.items() if k != "$ref"}}
        yield path, merged, name in required
        yield from _children(merged, path, root)
    for sub in spec.get("patternProperties", {}).values():
        if "title" not in sub:      # a rule added to the titled pattern's keys (a map's kind)
            continue
        path = f"{prefix}.{sub['title']}"
        merged = _merge(sub, root)
        yield path, merged, False
        yield from _fields(merged, path, root)


def _children(spec: dict, path: str, root: dict) -> Iterator[tuple[str, dict, bool]]:
    if "properties" in spec or "patternProperties" in spec:
        yield from _fields(spec, path, root)
    items = spec.get("items")
    if isinstance(items, dict) and "properties" in _resolve(items, root):
        yield from _fields(items, f"{path}[]", root)


def _merge(spec: dict, root: dict) -> dict:
    """A schema with its $ref's keywords, its own winning; `properties` merged key by key."""
    base = _resolve(spec, root)
    out = {**base, **{k: v for k, v in spec.items() if k != "$ref"}}
    if "properties" in base and "properties" in spec:
        out["properties"] = {**base["properties"], **{k: {**base["properties"].get(k, {}), **v}
                                                      for k, v in spec["properties"].items()}}
    return out


def _resolve(spec: Any, root: dict) -> Any:
    while isinstance(spec, dict) and "$ref" in spec:
        target = root
        for part in spec["$ref"].lstrip("#/").split("/"):
            target = target[part]
        spec = {**target, **{k: v for k, v in spec.items() if k != "$ref"}}
    return spec


def _type(spec: Any, root: dict) -> str:
    spec = _resolve(spec, root)
    if spec is True or spec == {}:
        return "any"
    if "const" in spec:
        return f"`{json.dumps(spec['const'])}`"
    if "enum" in spec:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in spec["enum"])
    for key in ("oneOf", "anyOf"):
        if key in spec:
            return " or ".join(_type(s, root) for s in spec[key])
    kinds = spec.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
    words = []
    for k in kinds:
        if k == "array":
            n = (spec.get("minItems"), spec.get("maxItems"))
            count = f"{n[0]} " if n[0] is not None and n[0] == n[1] else ""
            items = _type(spec["items"], root) if isinstance(spec.get("items"), dict) else None
            if items is not None and ("|" in items or " or " in items):
                items = f"({items})"
            words.append(f"array of {count}{items}" if items else "array")
        elif k == "object" and "additionalProperties" in spec and isinstance(spec["additionalProperties"], dict):
            words.append(f"object of {_type(spec['additionalProperties'], root)}")
        else:
            words.append(k)
    bounds = "".join(f" {sign} {spec[key]}" for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"))
                     if key in spec)
    if bounds:          # the bound is on the number: "integer ≥ 1 | null"
        words = [w + bounds if w in ("integer", "number") else w for w in words]
    return " \\| ".join(words) or "any"


def _dtypes(spec: dict) -> str:
    return ", ".join(_resolve(spec, schema())["enum"])


def update(readme: Path) -> bool:
    """Rewrite the generated block of `readme`; True when it changed."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + markdown() + text[end:]
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def current(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8")
    return text[text.index(BEGIN): text.index(END) + len(END)]


if __name__ == "__main__":
    changed = update(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
    print("updated" if changed else "current", file=sys.stderr)
