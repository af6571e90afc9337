"""Decision rules on top of the classifier: class -> gate, low confidence and unknown -> reject gate."""

from __future__ import annotations

import os

import numpy as np
import pytest

from daemon.classify import ItemClassifier, inference_threads
from daemon.settings import ClassifySettings
from model import Prediction

CLASSES = ["cardboard", "glass", "metal", "paper", "plastic", "trash", "textile"]
GATES = {"cardboard": 1, "paper": 1, "glass": 2, "metal": 3, "plastic": 3, "trash": 4}


class ScriptedClassifier:
    """Returns the predictions it is given, and records how it was called."""

    class_names = CLASSES

    def __init__(self, predictions: list[Prediction]) -> None:
        self.predictions = predictions
        self.calls: list[int] = []

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        self.calls.append(len(images))
        return self.predictions[: len(images)]


def pred(label: str, confidence: float, unknown: float = 0.0) -> Prediction:
    scores = {c: (confidence if c == label else (1 - confidence) / (len(CLASSES) - 1)) for c in CLASSES}
    return Prediction(label=label, confidence=confidence, scores=scores, unknown=unknown)


def decide(predictions: list[Prediction], confidence: float = 0.5, unknown: float = 0.5) -> list:
    clf = ScriptedClassifier(predictions)
    ic = ItemClassifier(ClassifySettings(confidence_threshold=confidence, unknown_threshold=unknown), clf, GATES, 4)
    crops = [np.zeros((20, 20, 3), np.uint8) for _ in predictions]
    out = ic.decide(crops)
    assert clf.calls == [len(predictions)]  # one batched call for all crops of a frame
    return out


@pytest.mark.parametrize("label, gate", [("cardboard", 1), ("paper", 1), ("glass", 2), ("metal", 3), ("plastic", 3)])
def test_confident_items_go_to_their_class_gate(label: str, gate: int) -> None:
    (d,) = decide([pred(label, 0.9, unknown=0.1)])
    assert (d.action, d.reason, d.gate, d.label) == ("sort", None, gate, label)


def test_low_confidence_goes_to_reject_gate() -> None:
    (d,) = decide([pred("glass", 0.49)])
    assert (d.action, d.reason, d.gate) == ("reject", "low_confidence", 4)


def test_unknown_wins_over_a_confident_label() -> None:
    (d,) = decide([pred("glass", 0.95, unknown=0.8)])
    assert (d.action, d.reason, d.gate) == ("reject", "unknown", 4)


def test_class_without_gate_is_rejected_as_unmapped() -> None:
    (d,) = decide([pred("textile", 0.99)])
    assert (d.action, d.reason, d.gate) == ("reject", "unmapped", 4)


def test_thresholds_are_inclusive_as_documented() -> None:
    # confidence == threshold is enough; unknown == threshold is not "above" it.
    (d,) = decide([pred("metal", 0.5, unknown=0.5)])
    assert d.action == "sort"


def test_batch_keeps_order_and_scores() -> None:
    ds = decide([pred("glass", 0.9), pred("metal", 0.2), pred("paper", 0.8, unknown=0.9)])
    assert [(d.label, d.gate, d.reason) for d in ds] == [("glass", 2, None), ("metal", 4, "low_confidence"),
                                                         ("paper", 4, "unknown")]
    assert set(ds[0].scores) == set(CLASSES)


def test_empty_batch_does_not_call_the_model() -> None:
    clf = ScriptedClassifier([])
    assert ItemClassifier(ClassifySettings(), clf, GATES, 4).decide([]) == []
    assert clf.calls == []


def test_inference_threads_default_to_half_the_cores() -> None:
    assert inference_threads(3) == 3
    assert 1 <= inference_threads(0) <= max(1, (os.cpu_count() or 2) // 2)
