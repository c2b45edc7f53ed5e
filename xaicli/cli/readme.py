"""The README's method and metric tables, from the registries: `python -m xaicli.cli.readme README.md` (`make readme`).

Each table sits between `<!-- methods:FAMILY -->` and `<!-- /methods:FAMILY -->` (the
metrics of `xai stats`: `<!-- metrics -->`); this
rewrites what is between them, and tests/test_docs.py checks that the file is current.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from xaicli.explain import registry


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _name(m) -> str:
    out = f"`{m.name}`"
    if m.default:
        out += " (default)"
    if m.aliases:
        out += "; also " + ", ".join(f"`{a}`" for a in m.aliases)
    return out


def _options(m) -> str:
    return ", ".join(f"`{'/'.join(o.decls)}`" for o in m.options) or "-"


def _uses(m) -> str:
    """What the engine must provide, from the declaration's flags."""
    if m.family == "attribution":
        parts = ["one map per `--baseline`" if m.baseline else "baseline `none`"]
        if m.integral:
            parts.append("path integral (`--steps`, `--quadrature`, `--tolerance`)")
        return "; ".join(parts)
    parts = ["gradients" if m.gradients else "no gradients"]
    if m.second_order:
        parts.append("double backward")
    if m.per_channel:
        parts.append("one forward per channel")
    if m.target_independent:
        parts.append("same map for every target")
    if m.whole_model:
        source = f" from {', '.join(m.requires)}" if m.requires else (
            " from every `--layer`" if m.reads_layers else ", ignores `--layer`")
        parts.append("one map per image" + source)
    if m.token_layers:
        parts.append("ViT layers only")
    if m.min_layers > 1:
        parts.append(f"needs {m.min_layers}+ layers")
    if set(m.tasks) != set(registry.TASKS):
        parts.append(" and ".join(m.tasks) + " only")
    if not m.in_all:
        parts.append("not in `all`")
    return "; ".join(parts)


def table(family: str) -> str:
    rows = ["| method | computes | uses | options | checked against | how we compute it |",
            "| --- | --- | --- | --- | --- | --- |"]
    for m in registry.methods(family).values():
        ref = f"`{m.reference_package}.{m.reference}`" + (f": {m.checked}" if m.checked else "")
        rows.append("| " + " | ".join(_cell(c) for c in (_name(m), m.summary, _uses(m), _options(m), ref, m.notes))
                    + " |")
    return "\n".join(rows)


def metric_table() -> str:
    """`xai stats`'s metrics, from the metric registry: one row per metric, in --metrics order."""
    from xaicli.metrics import registry as metrics

    rows = ["| group | metric | keys | meaning | better | `null` when | checked against |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in metrics.metrics().values():
        name = f"`{m.name}`" + ("" if m.default else " (not default)")
        keys = ", ".join(f"`{k}`" for k in m.keys)
        better = " ".join(f"{m.direction(k)}" for k in m.keys) if not isinstance(m.better, str) else m.better
        rows.append("| " + " | ".join(_cell(c) for c in (m.group, name, keys, m.summary, better or "-",
                                                          m.null or "-", m.reference or "-")) + " |")
    return "\n".join(rows)


def _replace(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def render(text: str) -> str:
    """`text` with every method table and the metric table between their markers regenerated."""
    for family in registry.PACKAGES:
        text = _replace(text, f"methods:{family}", table(family))
    return _replace(text, "metrics", metric_table())


def main(argv: list[str] | None = None) -> None:
    path = Path((argv or sys.argv[1:] or ["README.md"])[0])
    text = path.read_text()
    new = render(text)
    if new != text:
        path.write_text(new)
    print(path)


if __name__ == "__main__":
    main()
