"""Process-wide CLI settings set by the top-level options (-v/-q/--debug)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass


@dataclass
class Settings:
    verbosity: int = 0
    quiet: bool = False
    debug: bool = False

    @property
    def progress(self) -> bool:
        """tqdm bars only for a person watching: stderr is a terminal and not --quiet."""
        if self.quiet:
            return False
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False


settings = Settings()
log = logging.getLogger("xai")


def configure_logging() -> None:
    level = logging.ERROR if settings.quiet else (logging.DEBUG if settings.verbosity > 1 or settings.debug
                                                  else logging.INFO if settings.verbosity == 1 else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("xai: %(levelname)s: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
