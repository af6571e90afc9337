"""Turns item crops into sort/reject decisions with the project's classifier (model package).

An item seen in several views is decided once, from the mean of the views'
log-probabilities, renormalised: the product of their likelihoods as if the views
were independent, so a view that clearly rules a class out counts for more than
in a plain average of probabilities.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from daemon.settings import ClassifySettings

if TYPE_CHECKING:
    from model import Classifier, Prediction


def combine_views(predictions: list[Prediction]) -> Prediction:
    """One prediction from several of the same item: renormalised mean of log-probabilities, mean unknown."""
    if len(predictions) == 1:
        return predictions[0]
    from model.inference import Prediction  # several views mean a model is loaded: torch is imported already

    names = list(predictions[0].scores)
    logp = np.mean([[np.log(max(p.scores[c], 1e-9)) for c in names] for p in predictions], axis=0)
    prob = np.exp(logp - logp.max())
    prob /= prob.sum()
    k = int(np.argmax(prob))
    return Prediction(names[k], float(prob[k]), dict(zip(names, prob.astype(float).tolist())),
                      float(np.mean([p.unknown for p in predictions])))


@dataclass(frozen=True)
class Decision:
    """What to do with one item. ``reason`` is set for rejects: low_confidence, unknown or unmapped."""

    label: str
    confidence: float
    scores: dict[str, float]
    unknown: float
    action: str  # "sort" or "reject"
    reason: str | None
    gate: int


def inference_threads(requested: int) -> int:
    """0 means half the cores: the other half keeps capture, scheduling and MQTT responsive."""
    return requested if requested > 0 else max(1, (os.cpu_count() or 2) // 2)


def load_model(settings: ClassifySettings) -> Classifier:
    """Load the classifier named in the settings (None: the shipped default model)."""
    from model import load_classifier  # heavy import (torch): only when a model is needed

    return load_classifier(settings.model_path, backend=settings.backend, threads=inference_threads(settings.num_threads))


def _warm_up(classifier: Classifier, max_batch: int = 4) -> None:
    for n in range(1, max_batch + 1):
        classifier.predict([np.full((64, 48, 3), 127, np.uint8)] * n)


class ItemClassifier:
    """Classifies a batch of crops in one call and applies the confidence/unknown/gate rules."""

    def __init__(
        self, settings: ClassifySettings, classifier: Classifier, class_to_gate: dict[str, int], reject_gate: int
    ) -> None:
        self._s = settings
        self._clf = classifier
        self._class_to_gate = class_to_gate
        self._reject_gate = reject_gate
        self.last_inference_s = 0.0

    @property
    def class_names(self) -> list[str]:
        return list(self._clf.class_names)

    def unmapped_classes(self) -> list[str]:
        return [c for c in self._clf.class_names if c not in self._class_to_gate]

    def warm_up(self, max_batch: int = 4) -> None:
        """Throw-away inferences at batch sizes 1..max_batch: the CPU kernels are prepared per input
        shape, and without this the first frame with two items at once paid >100 ms (bench/)."""
        _warm_up(self._clf, max_batch)

    def replace_model(self, classifier: Classifier) -> None:
        """Warm the new model up, then swap it in: the next decide() uses it (model_reload.py)."""
        _warm_up(classifier)
        self._clf = classifier  # one reference assignment: a decide() in progress keeps the old one

    def decide(self, crops: list[np.ndarray]) -> list[Decision]:
        if not crops:
            return []
        clf = self._clf
        t0 = time.perf_counter()
        predictions = clf.predict(crops)
        self.last_inference_s = time.perf_counter() - t0
        return [self._decision(p) for p in predictions]

    def decide_views(self, items: list[tuple[np.ndarray, ...]]) -> list[Decision]:
        """One decision per item from all its views; every view of every item goes in one batch."""
        if not items:
            return []
        t0 = time.perf_counter()
        predictions = self._clf.predict([c for views in items for c in views])
        self.last_inference_s = time.perf_counter() - t0
        out, i = [], 0
        for views in items:
            out.append(self._decision(combine_views(predictions[i : i + len(views)])))
            i += len(views)
        return out

    def _decision(self, p: Prediction) -> Decision:
        reason: str | None = None
        if p.unknown > self._s.unknown_threshold:
            reason = "unknown"
        elif p.confidence < self._s.confidence_threshold:
            reason = "low_confidence"
        elif p.label not in self._class_to_gate:
            reason = "unmapped"
        gate = self._reject_gate if reason else self._class_to_gate[p.label]
        return Decision(
            label=p.label,
            confidence=round(p.confidence, 4),
            scores={k: round(v, 4) for k, v in p.scores.items()},
            unknown=round(p.unknown, 4),
            action="reject" if reason else "sort",
            reason=reason,
            gate=gate,
        )
