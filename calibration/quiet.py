"""Keep library chatter out of the technician's terminal.

The daemon's actuator logs through structlog (to stdout unless configured) and OpenCV/FFmpeg
print their own warnings; the calibration steps already explain every failure in one line,
so only errors from libraries are let through, on stderr.
"""

from __future__ import annotations

import os
import sys

import cv2

from daemon.logging_setup import setup_logging
from daemon.settings import LogSettings


def quiet_libraries() -> None:
    """Route structlog to stderr at error level and silence OpenCV's and FFmpeg's warnings (process-wide)."""
    setup_logging(LogSettings(level="error", format="console"), stream=sys.stderr)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when FFmpeg is first used: quiet
