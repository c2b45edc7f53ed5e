"""Man pages from the command tree: `python -m xaicli.cli.manpages man/` (`make man`).

Typer ≥ 0.26 vendors Click, so click-man cannot see the commands; the help text of
each command and option is the single source, so the pages cannot drift from --help
(a test regenerates them and compares).
"""

from __future__ import annotations

import sys
from pathlib import Path

from xaicli import __version__

SECTION = "1"
EXIT_STATUS = [("0", "success"), ("1", "runtime error: one line on stderr naming the problem and the fix"),
               ("2", "usage error (bad option or argument)"), ("130", "interrupted")]


ENVIRONMENT = [("HF_HUB_OFFLINE", "Set to 1 by xai for its own process: models load from local paths only, "
                                    "never from the network.")]
SHARD_ENVIRONMENT = [
    ("SLURM_ARRAY_TASK_ID", "With --shard slurm: this task's index in the array."),
    ("SLURM_ARRAY_TASK_COUNT", "With --shard slurm: the number of tasks N; the shard is (ID - MIN) / STEP of N."),
    ("SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_STEP", "With --shard slurm: the first index (default 0) and the "
                                                    "step (default 1) of the array."),
]
IO_ENVIRONMENT = [("XAI_IO_THREADS", "1 reads the next inputs and writes finished records in background threads, 0 "
                                     "does both inline. Unset: threads on a GPU or MPS device (so it does not wait "
                                     "for decoding and writing), inline on a CPU (where they compete for the "
                                     "cores).")]
COMPLETION_ENVIRONMENT = [("_XAI_COMPLETE", "Set by the shell completion scripts (completions/ in the source; "
                                            "source_bash, source_zsh, source_fish print them).")]
MANIFEST_TEXT = ("With -o DIR/: one line per record written (id, file, source path and sha256, task, commands, "
                 "maps), appended after the record's file is complete. --skip-existing treats a record as done "
                 "only when its file exists and its last manifest line has the same source sha256 and this "
                 "command.")


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.splitlines():
        lines.append(("\\&" + line) if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _paragraphs(text: str) -> str:
    """Help text → roff: blank lines become .PP, indented blocks stay verbatim."""
    out, verbatim = [], False
    for line in (text or "").strip("\n").splitlines():
        if not line.strip():
            if verbatim:
                out.append(".fi")
                verbatim = False
            out.append(".PP")
        elif line.startswith("  "):
            if not verbatim:
                out.append(".nf")
                verbatim = True
            out.append(_esc(line))
        else:
            if verbatim:
                out.append(".fi")
                verbatim = False
            out.append(_esc(line.strip()))
    if verbatim:
        out.append(".fi")
    return "\n".join(out)


def _page(name: str, command, ctx, summary: str) -> str:
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f'.TH {name.upper()} {SECTION} "" "xai {__version__}" "xai manual"',
             ".SH NAME", f"{_esc(name)} \\- {_esc(summary)}",
             ".SH SYNOPSIS", f".B {_esc(name.replace('-', ' '))}", _esc(usage),
             ".SH DESCRIPTION", _paragraphs(command.help or "")]
    params = [p for p in command.get_params(ctx) if p.get_help_record(ctx)]
    if params:
        lines.append(".SH OPTIONS")
        for p in params:
            opts, help_text = p.get_help_record(ctx)
            lines += [".TP", f".B {_esc(opts)}", _esc(help_text or "")]
    subs = getattr(command, "commands", None)
    if subs:
        lines.append(".SH COMMANDS")
        for sub_name, sub in subs.items():
            lines += [".TP", f".B {_esc(sub_name)}", _esc(sub.get_short_help_str(limit=200)),
                      f"See \\fBxai\\-{_esc(sub_name)}\\fR(1)."]
    names = {o for prm in params for o in getattr(prm, "opts", [])}
    env = list(ENVIRONMENT)
    if "--shard" in names:
        env += SHARD_ENVIRONMENT + IO_ENVIRONMENT
    if subs:
        env += COMPLETION_ENVIRONMENT
    lines.append(".SH ENVIRONMENT")
    for var, meaning in env:
        lines += [".TP", f".B {_esc(var)}", _esc(meaning)]
    if "--skip-existing" in names and "--output" in names and name != "xai-render":
        lines.append(".SH FILES")
        lines += [".TP", ".B DIR/manifest.jsonl", _esc(MANIFEST_TEXT)]
    lines.append(".SH EXIT STATUS")
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f".B {code}", _esc(meaning)]
    see = ["xai(1)"] if subs is None else [f"xai-{n}(1)" for n in subs]
    lines += [".SH SEE ALSO", _esc(", ".join(see))]
    return "\n".join(lines) + "\n"


def generate() -> dict[str, str]:
    """File name → roff text for xai.1 and one page per subcommand."""
    import typer

    from xaicli.cli.app import app

    root = typer.main.get_command(app)
    ctx = root.make_context("xai", ["--help"], resilient_parsing=True)
    pages = {"xai.1": _page("xai", root, ctx, "explain PyTorch image models from the shell")}
    for name, sub in root.commands.items():
        sub_ctx = sub.make_context(f"xai {name}", [], parent=ctx, resilient_parsing=True)
        pages[f"xai-{name}.1"] = _page(f"xai-{name}", sub, sub_ctx, sub.get_short_help_str(limit=80))
    return pages


def main(argv: list[str] | None = None) -> None:
    out = Path((argv or sys.argv[1:] or ["man"])[0])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("xai*.1"):
        old.unlink()
    for name, text in generate().items():
        (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main()
