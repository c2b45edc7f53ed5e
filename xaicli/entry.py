"""The console script. It imports and builds the CLI inside its own handler, so that Ctrl-C
before a command runs (importing typer and click, building the command: ~0.1 s) is the
usual one line and exit 130, not a traceback."""

import sys


def main() -> None:
    try:
        from xaicli.cli.app import main as run

        run()
    except KeyboardInterrupt:
        print("xai: error: interrupted", file=sys.stderr)
        sys.exit(130)
