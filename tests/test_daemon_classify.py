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


def test_views_are_combined_by_the_mean_of_their_log_probabilities() -> None:
    from daemon.classify import combine_views

    def two(glass: float) -> Prediction:
        scores = {c: 1e-6 for c in CLASSES} | {"glass": glass, "metal": 1 - glass}
        return Prediction("glass" if glass > 0.5 else "metal", max(glass, 1 - glass), scores, 0.1)

    # Two views say glass 0.9, one says metal 0.999. The mean of probabilities would pick glass (0.60);
    # the mean of log-probabilities (product of the views' likelihoods) picks metal: (0.81 * 0.001) < (0.01 * 0.999).
    views = [two(0.9), two(0.9), two(0.001)]
    combined = combine_views(views)
    glass = (0.9 * 0.9 * 0.001) ** (1 / 3)
    metal = (0.1 * 0.1 * 0.999) ** (1 / 3)
    assert combined.label == "metal"
    assert combined.confidence == pytest.approx(metal / (glass + metal + 5 * 1e-6), rel=1e-4)
    assert sum(combined.scores.values()) == pytest.approx(1.0)
    assert combined.unknown == pytest.approx(0.1)
    assert combine_views([views[0]]) is views[0]  # one view: the model's own prediction, untouched


def test_all_views_of_all_items_go_to_the_model_in_one_batch() -> None:
    clf = ScriptedClassifier([pred("glass", 0.9), pred("glass", 0.8), pred("paper", 0.3), pred("paper", 0.2), pred("paper", 0.25)])
    ic = ItemClassifier(ClassifySettings(), clf, GATES, 4)
    crop = np.zeros((20, 20, 3), np.uint8)
    decisions = ic.decide_views([(crop, crop), (crop, crop, crop)])
    assert clf.calls == [5]
    assert [d.label for d in decisions] == ["glass", "paper"]
    assert decisions[0].gate == 2 and decisions[1].reason == "low_confidence"
