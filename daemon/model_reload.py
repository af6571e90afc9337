"""Which model is live, and replacing it while the line runs (SIGHUP / `systemctl reload`).

Why a background thread: loading a checkpoint (and, for the ONNX backends, exporting and
quantising it) takes seconds. The old model keeps deciding meanwhile; the new one is warmed
up and then swapped in with one reference assignment between two frames, so no frame waits
and the scheduled fires are untouched. A file that fails to load leaves the old model live.

Why a child process for the ONNX export: torch's exporter holds the interpreter lock for up to
160 ms at a time (measured with the shipped model), longer than a frame at 30 fps, so in the
daemon's process it dropped frames. The child (``python -m daemon.model_reload PATH BACKEND``)
writes the ONNX bytes to stdout; building the session from them holds the lock for ~4 ms.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.classify import ItemClassifier, inference_threads, load_model
from daemon.settings import ClassifySettings

if TYPE_CHECKING:
    from model import Classifier

log = structlog.get_logger(__name__)

IN_MEMORY = "in-memory"  # a classifier handed to the pipeline by a caller, not read from a file
_RELOAD_NICE = 10  # the loading thread yields the CPU to capture and inference


def file_checksum(path: Path) -> str:
    """sha256 of the model file: the same value `wastesort-train export --install` records."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_onnx(path: Path, backend: str) -> bytes:
    """The exported (and for onnx-int8 quantised) network of a checkpoint, built in this process."""
    from model.checkpoint import load_checkpoint
    from model.inference import export_onnx_bytes, inference_net, quantize_onnx_int8

    ckpt = load_checkpoint(path)
    raw = export_onnx_bytes(inference_net(ckpt), ckpt.preprocess)
    return quantize_onnx_int8(raw) if backend == "onnx-int8" else raw


def load_in_background(settings: ClassifySettings, timeout_s: float = 600.0) -> Classifier:
    """The configured model, with the heavy ONNX export in a child process (see the module doc)."""
    path = model_file(settings)
    if settings.backend == "torch" or path.suffix == ".onnx":
        return load_model(settings)  # no export: cheap enough here
    from model.checkpoint import load_checkpoint
    from model.inference import Classifier, OnnxRunner

    ckpt = load_checkpoint(path)  # a bad file fails here, with the usual message
    proc = subprocess.run([sys.executable, "-m", "daemon.model_reload", str(path), settings.backend],
                          capture_output=True, timeout=timeout_s)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(f"exporting {path} to ONNX failed: {lines[-1] if lines else proc.returncode}")
    runner = OnnxRunner(proc.stdout, inference_threads(settings.num_threads))
    return Classifier(ckpt, runner, settings.backend)


def model_file(settings: ClassifySettings) -> Path:
    from model.inference import DEFAULT_MODEL_PATH

    return settings.model_path if settings.model_path is not None else DEFAULT_MODEL_PATH


def trained_on(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a checkpoint's metadata an operator needs to tell models apart."""
    keys = ("date", "data", "val_accuracy", "val_images", "base_val_accuracy", "site_val_accuracy", "git_commit")
    out = {k: meta[k] for k in keys if k in meta}
    ft = meta.get("finetune")
    if isinstance(ft, dict):
        out["finetune"] = {k: ft[k] for k in ("site_data", "site_images", "new_classes", "init_checksum", "method")
                           if k in ft}
    return out


@dataclass(frozen=True)
class ActiveModel:
    """What the `model` topic says: the file, its checksum, its classes and what it was trained on."""

    path: str
    checksum: str
    classes: list[str]
    backend: str
    trained_on: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=lambda: round(time.time(), 3))

    def payload(self, run: str, reason: str, previous: str | None = None) -> dict[str, Any]:
        return {"run": run, "reason": reason, "previous_checksum": previous, **asdict(self)}


def describe(classifier: Classifier, path: Path | None, checksum: str) -> ActiveModel:
    """Also for a stand-in classifier a caller hands the pipeline (tests): what it lacks is left out."""
    meta = getattr(getattr(classifier, "checkpoint", None), "meta", None) or {}
    return ActiveModel(str(path) if path else IN_MEMORY, checksum, list(classifier.class_names),
                       getattr(classifier, "backend", "unknown"), trained_on(meta))


class ModelReloader:
    """Loads the configured model file again on request and swaps it into the running classifier."""

    def __init__(
        self,
        settings: ClassifySettings,
        target: ItemClassifier,
        active: ActiveModel,
        on_change: Callable[[ActiveModel, str | None], None],
        on_alert: Callable[[str, str], None],
    ) -> None:
        self._s = settings
        self._target = target
        self.active = active
        self._on_change = on_change
        self._on_alert = on_alert
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.reloads = 0
        self.failures = 0

    def request(self) -> bool:
        """Start a reload in the background; False if one is already running (it reads the newest file)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._thread = threading.Thread(target=self._reload, name="model-reload", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout_s: float | None = None) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout_s)

    def _reload(self) -> None:
        try:  # this thread only (Linux: per-thread nice); the export child inherits it
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + _RELOAD_NICE))
        except OSError:
            pass  # e.g. the unit's SystemCallFilter refuses it: the load just competes a little more
        path = model_file(self._s)
        log.info("model_reload_started", path=str(path), checksum=self.active.checksum)
        try:
            before = file_checksum(path)
            model = load_in_background(self._s)
            after = file_checksum(path)
            if after != before:
                raise ValueError(f"{path} changed while it was being loaded; send SIGHUP again")
            self._target.replace_model(model)
        except Exception as e:  # a bad file must never stop the line: the old model stays live
            self.failures += 1
            msg = f"model reload from {path} failed, still running {self.active.checksum[:12]}: {type(e).__name__}: {e}"
            log.error("model_reload_failed", path=str(path), error=f"{type(e).__name__}: {e}")
            self._on_alert("model_reload_failed", msg)
            return
        previous = self.active.checksum
        self.active = describe(model, path, after)
        self.reloads += 1
        unmapped = self._target.unmapped_classes()
        log.info("model_changed", previous=previous, checksum=after, classes=self.active.classes,
                 trained_on=self.active.trained_on, unmapped_to_reject=unmapped)
        self._on_change(self.active, previous)


if __name__ == "__main__":  # the export child: python -m daemon.model_reload PATH BACKEND > onnx bytes
    import warnings

    warnings.simplefilter("ignore")
    sys.stdout.buffer.write(build_onnx(Path(sys.argv[1]), sys.argv[2]))
