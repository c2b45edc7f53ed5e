"""The README's model table, generated from the format registry (`make readme`; a test checks it
is current): one row per built-in model, then one per format.

    python -m xaicli.models.formats.readme README.md     # rewrite the block between the markers
"""

from __future__ import annotations

import sys
from pathlib import Path

BEGIN = "<!-- model-formats: generated from xaicli/models/formats by `make readme`; do not edit -->"
END = "<!-- end model-formats -->"


def markdown() -> str:
    from xaicli.models.builtin import DESCRIPTIONS
    from xaicli.models.formats import FORMATS

    lines = ["| spec | what | notes |", "| --- | --- | --- |"]
    lines += [f"| `builtin:{name}` | {what} | {notes} |" for name, (what, notes) in DESCRIPTIONS.items()]
    lines += [f"| {f.spec} | {f.what} | {f.notes} |" for f in FORMATS]
    return "\n".join([BEGIN, *lines, END])


def current(path: Path) -> str:
    """The generated block as it stands in `path` (empty when the markers are missing)."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        return ""
    return text[text.index(BEGIN):text.index(END) + len(END)]


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "README.md")
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"{path}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    new = text[:text.index(BEGIN)] + markdown() + text[text.index(END) + len(END):]
    if new != text:
        from xaicli.io.atomic import atomic_write

        atomic_write(path, new.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
