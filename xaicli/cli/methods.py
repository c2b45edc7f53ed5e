"""CLI pieces generated from the method registry: `--method`, its help, and the method options.

A command declares `**options` last; `with_method_options(family)` replaces it in the
signature Typer reads by one keyword parameter per registered option (the family
engine's and every method's), so a method that declares a new option needs no CLI
edit. The values reach the command as `options`, a dict by option name.

Torch-free: `xai --help` and completion run this.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, List, Optional

import typer
from typing_extensions import Annotated

from xaicli.explain import registry


def method_option(family: str, what: str, extra: str = "") -> Any:
    """The `--method/-M` option: choices and help from the registry."""
    known = registry.methods(family)
    default = next((m.name for m in known.values() if m.default), None)
    left_out = [m.name for m in known.values() if not m.in_all]
    help_text = (f"{what} (repeatable, or comma-separated): {', '.join(known)}; all = every method that fits the "
                 f"model{' except ' + ', '.join(left_out) if left_out else ''}. Default {default}.{extra}")
    return Annotated[Optional[List[str]], typer.Option(
        "--method", "-M", help=help_text, show_default=False,
        autocompletion=lambda: [*registry.methods(family), "all"])]


def methods_help(family: str) -> str:
    """The command help's list of methods, one line each (verbatim block)."""
    import textwrap

    known = registry.methods(family)
    width = max(len(n) for n in known) + 4
    lines = ["\b"]
    for m in known.values():
        also = f" (also {', '.join(m.aliases)})" if m.aliases else ""
        tasks = "" if set(m.tasks) == set(registry.TASKS) else f"; {' and '.join(m.tasks)} models only"
        lines += textwrap.wrap(f"{m.summary}{tasks}{also}", 78, initial_indent=f"  {m.name:<{width - 2}}",
                               subsequent_indent=" " * width, break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines)


def with_method_options(family: str, after: str = "method") -> Callable:
    """Decorator: the function's `**options` become the registry's options in the signature
    Typer reads, placed after parameter `after` (so `--help` shows them next to --method)."""
    def wrap(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in params}
        generated = [_parameter(o) for o in registry.options(family)]
        clash = [p.name for p in generated if p.name in taken]
        if clash:
            raise RuntimeError(f"option {clash[0]!r} is both a command parameter and a method option")
        at = [p.name for p in params].index(after) + 1
        func.__signature__ = sig.replace(parameters=params[:at] + generated + params[at:])
        return func
    return wrap


def _parameter(o: registry.Option) -> inspect.Parameter:
    kind: Any = List[o.type] if o.multiple else o.type
    if o.default is None:
        kind = Optional[kind]
    extra: dict[str, Any] = {}
    if o.min is not None:
        extra["min"] = o.min
    if o.choices is not None:
        extra["autocompletion"] = o.choices
    info = typer.Option(*o.decls, help=o.help, show_default=o.show_default, **extra)
    return inspect.Parameter(o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.default,
                             annotation=Annotated[kind, info])


def method_values(family: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options as the command received them, checked by their declarations."""
    values = {**registry.option_defaults(family), **options}
    registry.check_options(family, values)
    return values
