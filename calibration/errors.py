"""The one exception the calibration steps raise for a human-readable refusal."""

from __future__ import annotations


class CalibrationError(Exception):
    """A measurement or input that must not reach the config; the message says what to do.

    ``calibration.cli`` prints it without a traceback and exits non-zero.
    """
