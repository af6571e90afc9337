"""What one calibration step hands to ``calibration.cli.main``: result, config changes, output, files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calibration.commit import Artefact
from calibration.config_writer import Updates


@dataclass
class StepOutcome:
    """What a step measured, the config keys to change, the lines to print, and files to save with the config."""

    result: Any
    updates: Updates
    lines: list[str]
    artefacts: list[Artefact] = field(default_factory=list)
    report: bool = True  # False for a step that measures nothing (snapshot)
