"""Shell completion, kept cheap: every TAB runs `xai` once.

Typer 0.29 coerces every parameter value through a pydantic TypeAdapter, built on first
use; completing `xai pre<TAB>` parses the root options (and, for `xai predict --<TAB>`,
the subcommand's) and so imports pydantic: ≈0.13 s of the ≈0.3 s a TAB took here.
Completion only needs the option names and the candidates, never the converted values,
so while completing, values pass through unconverted and pydantic is never imported.
"""

from __future__ import annotations


class _PassThrough:
    def coerce(self, value, param=None, ctx=None):
        return value


def skip_value_coercion() -> bool:
    """Make Typer hand over raw option values (completion only). False if Typer's layout changed."""
    try:
        from typer.core import _TyperParameter
    except ImportError:
        return False
    if not hasattr(_TyperParameter, "get_runtime_param"):
        return False
    passthrough = _PassThrough()
    _TyperParameter.get_runtime_param = lambda self: passthrough  # type: ignore[method-assign]
    return True
