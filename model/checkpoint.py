"""The single-file checkpoint: weights + model config + class names + preprocessing + metadata.

Loaded with `weights_only=True`: a checkpoint holds tensors and plain data,
never pickled code, so a file from elsewhere cannot run anything on load.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import StudentConfig
from .preprocess import PreprocessConfig
from .student import DistilledViT

FORMAT = "wastesort-student"
VERSION = 1


@dataclass
class StudentCheckpoint:
    config: StudentConfig
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    preprocess: PreprocessConfig
    temperature: float = 1.0
    unknown: dict[str, Any] | None = None  # unknown-item scorer parameters (see model/unknown.py)
    meta: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> DistilledViT:
        # the stored weights replace any ImageNet stem: don't read the Lite package just to overwrite it
        model = DistilledViT(self.config.replace(stem_pretrained=False) if self.config.stem != "linear" else self.config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_checkpoint(
    path: str | Path,
    model: DistilledViT,
    class_names: list[str],
    preprocess: PreprocessConfig,
    temperature: float = 1.0,
    unknown: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically (temp file + rename) so a crash never leaves half a file."""
    if len(class_names) != model.cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.cfg.num_classes}-class model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit()}
    info.update(meta or {})
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "temperature": float(temperature),
        "unknown": unknown,
        "meta": info,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> StudentCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise ValueError(f"{path} is not a readable wastesort checkpoint: {exc}") from exc
    return checkpoint_from_payload(payload, path)


def checkpoint_from_payload(payload: Any, path: str | Path) -> StudentCheckpoint:
    """The checkpoint in a dict torch.load already returned (`path` is for the error messages)."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a wastesort student checkpoint (format={payload.get('format') if isinstance(payload, dict) else type(payload).__name__})")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})")
    return StudentCheckpoint(
        config=StudentConfig.from_dict(payload["config"]),
        state_dict=payload["state_dict"],
        class_names=list(payload["class_names"]),
        preprocess=PreprocessConfig.from_dict(payload["preprocess"]),
        temperature=float(payload.get("temperature", 1.0)),
        unknown=payload.get("unknown"),
        meta=dict(payload.get("meta") or {}),
    )
