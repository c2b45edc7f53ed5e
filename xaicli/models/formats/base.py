"""What a model format declares to the registry (`formats/__init__.py`): its name, how it
recognises a spec, what it needs installed, how it builds a ModelAdapter, and its README row.

Declarations import nothing heavy: `xai --help` reads them (the -m and --arch help come from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Format:
    name: str                 # in the record's meta ("format") and in messages
    title: str                # "model X is {title}": "a timm folder"
    spec: str                 # README table: how -m / --arch name it (markdown)
    what: str                 # README table: what it is
    notes: str                # README table: how it loads and preprocesses
    short: str = ""           # folders: its name in "an smp, timm or Hugging Face folder"
    accepts: str = ""         # files: its part of the "-m takes ..." line and of -m's help
    config: Callable[[dict], bool] | None = None   # recognises a folder by the shape of its config.json
    suffixes: tuple[str, ...] = ()                 # recognises a file by its suffix
    sniff: Callable[[Path], bool] | None = None    # recognises a file by its content
    arch: str | None = None   # builds state dicts for `--arch PREFIX:NAME` ("" : smp's ARCH:ENCODER, no prefix)
    arch_help: str = ""       # its part of --arch's help
    extra: str | None = None  # the pip extra that installs `needs` (pip install 'xai[EXTRA]')
    needs: tuple[str, ...] = ()
    load: Callable[[Path, Any], Any] | None = None             # (path, LoadOptions) -> ModelAdapter
    from_state: Callable[[dict, Path, Any], Any] | None = None  # (state dict, path, LoadOptions) -> ModelAdapter

