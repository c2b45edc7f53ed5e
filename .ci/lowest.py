"""Print pip constraints that pin every requirement of pyproject.toml to its lowest allowed release.

`make test-lowest` installs the project with them (on the oldest Python allowed) and runs the suite:
a floor that pyproject.toml states is a floor that was tested. `>=X` becomes `==X`; `==X` stays;
a requirement with no floor is left out. Extras: those named on the command line; `--python` prints the
oldest Python instead.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"(?:>=|==)\s*([0-9][^,;\s]*)")


def constraints(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    out = []
    for req in reqs:
        spec, _, marker = req.partition(";")
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)
        floor = FLOOR.search(spec)
        if floor:
            out.append(f"{name}=={floor.group(1)}" + (f"; {marker.strip()}" if marker else ""))
    return out


def lowest_python(pyproject: Path) -> str:
    return FLOOR.search(tomllib.loads(pyproject.read_text())["project"]["requires-python"]).group(1)


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "pyproject.toml"
    print(lowest_python(path) if sys.argv[1:] == ["--python"] else "\n".join(constraints(path, sys.argv[1:])))
