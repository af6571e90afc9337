"""structlog configuration: JSON lines for journald/pipes, a colourless console renderer on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from daemon.settings import LogSettings


def setup_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    """Configure structlog (and stdlib logging, for library messages) once per process."""
    out = stream if stream is not None else sys.stderr
    fmt = settings.format
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    level = getattr(logging, settings.level.upper())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=out, format="%(levelname)s %(name)s: %(message)s")
