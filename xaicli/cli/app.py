"""The `xai` entry point: top-level options, command registration, error handling.

Command modules are imported here, but each imports torch and the model stack only
inside its function body, so `xai --help` and shell completion stay fast.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Optional

import typer

from xaicli import __version__
from xaicli.cli.state import configure_logging, settings
from xaicli.errors import XaiError

app = typer.Typer(
    name="xai",
    help="Explain PyTorch image models: predictions, Integrated Gradients, Grad-CAM, statistics and figures.\n\n"
    "Commands stream records (tar of .npz) between each other, e.g.\n\n"
    "  xai predict -m builtin:shapes-seg scans/ | xai attribute -m builtin:shapes-seg | xai render -o figs/",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xai {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More messages on stderr (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr; no progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    settings.verbosity, settings.quiet, settings.debug = verbose, quiet, debug
    configure_logging()


def _register() -> None:
    from xaicli.cli import commands

    for name, func in commands.COMMANDS:
        app.command(name)(func)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; user errors are one line on stderr with exit 1 or 2, never a traceback."""
    sys.unraisablehook = _unraisable
    sys.exit(run(argv))


def _unraisable(unraisable) -> None:
    """Errors Python itself ignores (in __del__, at GC) print a traceback; keep them for --debug.

    Seen after Ctrl-C: an image reader interrupted in its constructor fails again in its
    __del__ while the interrupt unwinds, and its traceback came before our one line."""
    from xaicli.cli.state import settings

    if settings.debug:
        sys.__unraisablehook__(unraisable)


_BUILT: list = []


def _command():
    """The click command of the app, built once per process: building it reads every option's
    annotation (about 35 ms), which in-process callers (the tests, the fuzz campaign) paid per call."""
    if not _BUILT:
        _BUILT.append(typer.main.get_command(app))
    return _BUILT[0]


def run(argv: list[str] | None = None) -> int:
    from typer import _click
    from typer import Abort   # the public name: typer.exceptions exists from 0.29 only

    if os.environ.get("_XAI_COMPLETE"):
        # add_completion=False keeps --install-completion out of --help, but it also leaves
        # Typer's shells unregistered: register them so `_XAI_COMPLETE=... xai` completes.
        from typer.completion import completion_init

        from xaicli.cli.completion import skip_value_coercion

        completion_init()
        skip_value_coercion()  # completion needs no converted values: keeps pydantic out of every TAB
        command = typer.main.get_command(app)
    else:
        command = _command()
    try:
        rv = command.main(args=argv, prog_name="xai", standalone_mode=False)
        if rv == 130:   # Typer turns Ctrl-C into Exit(130) and returns the code; no command returns 130
            _say_error("interrupted")
        return rv if isinstance(rv, int) else 0
    except _click.exceptions.NoArgsIsHelpError as exc:   # `xai` or `xai stats` alone: the help
        exc.show()
        return exc.exit_code
    except _click.exceptions.ClickException as exc:
        _say_error(_usage_message(exc))
        return exc.exit_code
    except Abort:
        return 130
    except XaiError as exc:
        _say_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _say_error("interrupted")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except SystemExit as exc:
        # Click turns a broken pipe (EPIPE) into SystemExit(1) even with standalone_mode=False.
        if isinstance(exc.__context__, BrokenPipeError):
            _silence_stdout()
            return 0
        raise
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        # Raised by a write to stdout (a file sink names its path itself): `> /dev/full`,
        # a full disk, `ulimit -f`. What is still buffered would fail again at exit.
        _say_error(f"cannot write to stdout ({exc.strerror}); free space or write elsewhere with -o")
        _silence_stdout()
        return 1
    except MemoryError:
        _say_error("out of memory; lower --batch-size or the image size (--size)")
        return 1
    except Exception as exc:  # anything unexpected: still one line unless --debug
        if settings.debug:
            raise
        _say_error(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)")
        return 1


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO}


def _usage_message(exc) -> str:
    """Click's usage errors in the house format: one line, with where to look."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f"; see '{ctx.command_path} --help'"
    return message


def _say_error(message: str) -> None:
    if settings.debug:
        import traceback

        traceback.print_exc(file=sys.stderr)
    first = message.strip().splitlines()[0] if message.strip() else "error"
    try:
        print(f"xai: error: {first}", file=sys.stderr)
    except (BrokenPipeError, ValueError):
        pass


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
