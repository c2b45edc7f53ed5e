"""`xai --help`, every subcommand's --help and shell completion import no torch (they run
on every TAB). Each check runs in a fresh interpreter, since this one already has torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "segmentation_models_pytorch", "transformers", "timm", "pytorch_grad_cam",
         "captum", "matplotlib", "cv2", "scipy", "sklearn", "safetensors", "monai", "onnx", "onnx2torch")

# Runs the real entry point (xaicli.cli.app.main, what the console script calls), then
# reports which heavy packages got imported on the way.
PROBE = """
import json, sys
from xaicli.cli.app import main
code = None
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
sys.stderr.write('\\nPROBE ' + json.dumps({'code': code, 'heavy': heavy}) + '\\n')
""".replace("set(HEAVY)", repr(set(HEAVY)))


def _probe(args: list[str], **env: str) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    marker = [ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")]
    assert marker, proc.stderr
    return proc.stdout, json.loads(marker[-1][len("PROBE "):])


def _commands() -> list[str]:
    from xaicli.cli.commands import COMMANDS

    return [name for name, _ in COMMANDS]


def test_top_level_help_imports_no_torch():
    out, info = _probe(["--help"])
    assert info["code"] in (0, None)
    assert "predict" in out and "Usage" in out
    assert info["heavy"] == []


@pytest.mark.parametrize("command", _commands())
def test_command_help_imports_no_torch(command):
    out, info = _probe([command, "--help"])
    assert info["code"] in (0, None)
    assert f"xai {command}" in out
    assert info["heavy"] == []


def test_version_imports_no_torch():
    out, info = _probe(["--version"])
    assert out.startswith("xai ") and info["heavy"] == []


def test_bash_completion_completes_and_imports_no_torch():
    out, info = _probe([], _XAI_COMPLETE="complete_bash", COMP_WORDS="xai pre", COMP_CWORD="1")
    assert out.split() == ["predict"]
    assert info["heavy"] == []


def test_option_completion_imports_no_torch():
    out, info = _probe([], _XAI_COMPLETE="complete_bash", COMP_WORDS="xai predict --dev", COMP_CWORD="2")
    assert "--device" in out.split()
    assert info["heavy"] == []


def test_completion_through_the_console_script():
    script = Path(sys.executable).with_name("xai")
    if not script.exists():
        pytest.skip("xai console script not installed in this environment")
    env = {**os.environ, "_XAI_COMPLETE": "complete_bash", "COMP_WORDS": "xai pre", "COMP_CWORD": "1"}
    proc = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == ["predict"], proc.stderr
    src = subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "_XAI_COMPLETE": "source_bash"})
    assert src.returncode == 0 and "complete" in src.stdout and "_XAI_COMPLETE" in src.stdout


def test_ctrl_c_while_the_cli_imports_is_one_line(monkeypatch, capsys):
    import builtins

    from xaicli import entry

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "xaicli.cli.app":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as exit_:
        entry.main()
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "xai: error: interrupted\n"
