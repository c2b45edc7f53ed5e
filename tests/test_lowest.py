"""`.ci/lowest.py`: the constraints `make test-lowest` installs pin each floor of pyproject.toml."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lowest", ROOT / ".ci" / "lowest.py")
lowest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lowest)


def test_floors_become_pins_and_unbounded_requirements_are_left_out(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nrequires-python = ">=3.11"\n'
                    'dependencies = ["torch>=2.5.1,<=2.14.1", "pillow", "saliency==0.2.1", "typer >= 0.29, <1"]\n'
                    '[project.optional-dependencies]\n'
                    'test = ["pytest>=9.1", "tomli>=2; python_version < \'3.11\'"]\nother = ["monai>=1.5"]\n')
    assert lowest.constraints(path, []) == ["torch==2.5.1", "saliency==0.2.1", "typer==0.29"]
    assert lowest.constraints(path, ["test"])[3:] == ["pytest==9.1", "tomli==2; python_version < '3.11'"]
    assert lowest.lowest_python(path) == "3.11"


def test_every_runtime_requirement_of_the_project_has_a_floor():
    """A requirement without one would be installed at whatever release pip picks: untested by test-lowest."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = lowest.constraints(ROOT / "pyproject.toml", [])
    assert len(pinned) == len(deps), sorted(set(d.split(">")[0] for d in deps) - set(p.split("=")[0] for p in pinned))
