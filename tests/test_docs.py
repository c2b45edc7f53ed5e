"""The generated docs are current and complete: man pages (`make man`), shell completions
(`make completions`), and the README's coverage of every command and example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
COMPLETIONS = {"bash": "xai.bash", "zsh": "_xai", "fish": "xai.fish"}


def _commands() -> list[str]:
    from xaicli.cli.commands import COMMANDS

    return [name for name, _ in COMMANDS]


def _command(name: str):
    import typer

    from xaicli.cli.app import app

    return typer.main.get_command(app).commands[name]


# -- man pages ---------------------------------------------------------------------------------

def test_man_pages_are_current():
    from xaicli.cli.manpages import generate

    pages = generate()
    assert sorted(pages) == sorted(["xai.1"] + [f"xai-{c}.1" for c in _commands()])
    on_disk = sorted(p.name for p in (ROOT / "man").glob("*.1"))
    assert on_disk == sorted(pages), "run `make man`"
    for name, text in pages.items():
        assert (ROOT / "man" / name).read_text() == text, f"man/{name} is stale: run `make man`"


@pytest.mark.parametrize("command", _commands())
def test_every_option_is_in_its_man_page(command):
    page = (ROOT / "man" / f"xai-{command}.1").read_text().replace("\\-", "-")
    options = [o for p in _command(command).params for o in getattr(p, "opts", []) if o.startswith("-")]
    assert options, command
    missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", page)]
    assert missing == [], f"xai-{command}.1 lacks {missing}"


def _man_db() -> bool:
    """man-db itself, not absent and not the stub of a minimized Ubuntu image (which prints a notice)."""
    if not shutil.which("man"):
        return False
    proc = subprocess.run(["man", "--version"], capture_output=True, text=True, timeout=60)
    return proc.returncode == 0 and proc.stdout.startswith("man ")


@pytest.mark.skipif(not _man_db(), reason="man-db is not installed (or is a minimized image's stub)")
@pytest.mark.parametrize("page", ["xai.1", "xai-predict.1", "xai-attribute.1"])
def test_man_l_renders_without_warnings(page):
    proc = subprocess.run(["man", "--warnings", "-l", str(ROOT / "man" / page)], capture_output=True, text=True,
                          env={**ENV, "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    title = page[:-2].upper()
    assert proc.stdout.lstrip().startswith(f"{title}(1)")
    assert "SYNOPSIS" in proc.stdout and "EXIT STATUS" in proc.stdout
    if page == "xai.1":
        assert all(re.search(rf"^\s+{c}\b", proc.stdout, re.M) for c in _commands())


# -- completions -------------------------------------------------------------------------------

def _xai() -> list[str]:
    script = Path(sys.executable).with_name("xai")
    return [str(script)] if script.exists() else [sys.executable, "-m", "xaicli"]


@pytest.mark.parametrize("shell", sorted(COMPLETIONS))
def test_completion_scripts_are_current(shell):
    proc = subprocess.run(_xai(), capture_output=True, text=True, timeout=60,
                          env={**ENV, "_XAI_COMPLETE": f"source_{shell}"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), proc.stderr
    path = ROOT / "completions" / COMPLETIONS[shell]
    assert path.read_text() == proc.stdout, f"{path.name} is stale: run `make completions`"


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash")
def test_bash_completion_script_completes_in_bash():
    """Source the installed script in a real bash and ask it, as a TAB would."""
    xai_dir = str(Path(_xai()[0]).parent)
    script = f"""
        source {ROOT / 'completions' / 'xai.bash'}
        COMP_WORDS=(xai predict --sh); COMP_CWORD=2
        _xai_completion xai
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env={**ENV, "PATH": xai_dir + os.pathsep + ENV.get("PATH", "")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--shard"]


def test_completion_of_option_values():
    env = {**ENV, "_XAI_COMPLETE": "complete_bash", "COMP_WORDS": "xai attribute --baseline bl", "COMP_CWORD": "3"}
    proc = subprocess.run(_xai(), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["black", "blur"], proc.stderr


# -- README ------------------------------------------------------------------------------------

def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text()
    for command in _commands():
        assert re.search(rf"^#+ xai {command}\b", readme, re.M), f"README has no section for xai {command}"


def test_readme_method_tables_are_current():
    """The method tables between the <!-- methods:... --> markers are the registry's (`make readme`)."""
    from xaicli.cli.readme import render
    from xaicli.explain import registry

    readme = (ROOT / "README.md").read_text()
    assert render(readme) == readme, "README's method tables are stale: run `make readme`"
    for family in registry.PACKAGES:
        block = readme[readme.index(f"<!-- methods:{family} -->"):readme.index(f"<!-- /methods:{family} -->")]
        for m in registry.methods(family).values():
            assert f"| `{m.name}`" in block and f"`{m.reference_package}.{m.reference}`" in block, m.name


def test_readme_operations_section():
    readme = (ROOT / "README.md").read_text()
    ops = readme[readme.index("## Operations"):]
    for needle in ("--skip-existing", "--shard", "slurm", "completions/", "man/", "make man", "make completions",
                   "manifest.jsonl", "kill -9"):
        assert needle in ops, needle
    for script in sorted((ROOT / "examples").glob("*")):
        if script.name != "lib.sh":
            assert f"examples/{script.name}" in readme, f"README does not mention examples/{script.name}"


def test_readme_record_tables_are_current():
    """`make readme` regenerates them from xaicli/io/record.schema.json."""
    from xaicli.io.schema_doc import current, markdown

    assert current(ROOT / "README.md") == markdown(), "README's record tables are stale: run `make readme`"


def test_readme_record_example_is_a_valid_record():
    """The meta example of the README passes the validator (with real hashes for its '...')."""
    import io
    import json

    import numpy as np

    from xaicli.io.record import Record

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Record format"):readme.index("## xai render")]
    example = re.search(r"```json\n(.*?)```", section, re.S)[1].replace('"..."', '"' + "0" * 64 + '"')
    meta = json.loads(example)
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), image=np.zeros((256, 256), np.uint8),
             **{"attr/integrated_gradients/black": np.zeros((1, 3, 256, 256), np.float32)})
    assert Record.from_bytes(buf.getvalue(), "readme.npz").id == "scan_001"
