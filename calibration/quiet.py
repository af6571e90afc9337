"""Keep library chatter out of the technician's terminal, for the duration of one step.

The daemon's actuator logs through structlog (to stdout unless configured) and OpenCV/FFmpeg
print their own warnings; the calibration steps already explain every failure in one line,
so only errors from libraries are let through, on stderr. The previous settings are put back
afterwards, so a caller in the same process (tests, the daemon) keeps its own logging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import structlog

_FFMPEG_ENV = "OPENCV_FFMPEG_LOGLEVEL"  # read when OpenCV first uses FFmpeg; -8 = quiet


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """structlog to stderr at error level, OpenCV at error level, FFmpeg quiet; restored on exit."""
    saved_structlog = structlog.get_config()
    saved_cv = cv2.utils.logging.getLogLevel()
    set_env = _FFMPEG_ENV not in os.environ
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if set_env:
        os.environ[_FFMPEG_ENV] = "-8"
    try:
        yield
    finally:
        structlog.configure(**saved_structlog)
        cv2.utils.logging.setLogLevel(saved_cv)
        if set_env:
            os.environ.pop(_FFMPEG_ENV, None)
