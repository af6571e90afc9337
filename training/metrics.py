"""Classification metrics computed from logits: accuracy, macro-F1, per-class P/R, ECE, confusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.unknown import softmax  # the inference path's softmax, so metrics match what the daemon sees


@dataclass
class Metrics:
    accuracy: float
    macro_f1: float
    ece: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def compute_metrics(logits: np.ndarray, labels: np.ndarray, class_names: list[str], temperature: float = 1.0) -> Metrics:
    k = len(class_names)
    probs = softmax(logits, temperature)
    pred = probs.argmax(axis=1)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (labels, pred), 1)
    per_class, f1s = {}, []
    for i, name in enumerate(class_names):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[name] = {"precision": float(prec), "recall": float(rec), "f1": float(f1), "support": int(cm[i].sum())}
        f1s.append(f1)
    return Metrics(
        accuracy=float((pred == labels).mean()) if len(labels) else 0.0,
        macro_f1=float(np.mean(f1s)),
        ece=expected_calibration_error(probs, labels),
        per_class=per_class,
        confusion=cm.tolist(),
        n=int(len(labels)),
    )


TEMPERATURE_RANGE = (0.05, 20.0)  # the temperatures fit_temperature searches, and the ones a checkpoint may be given


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling: the T > 0 minimising validation NLL (1-D search, log-spaced then refined)."""
    def nll(t: float) -> float:
        p = softmax(logits, t)
        return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, None)).mean())

    grid = np.exp(np.linspace(np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1]), 200))
    best = float(grid[int(np.argmin([nll(t) for t in grid]))])
    fine = np.linspace(best * 0.9, best * 1.1, 81)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def reject_curve(probs: np.ndarray, unknown: np.ndarray, labels: np.ndarray, thresholds: list[float], unknown_threshold: float = 0.5) -> list[dict[str, float | None]]:
    """The daemon's reject rule on labelled data: for each confidence threshold, the share of items
    sorted (confidence >= t and unknown <= unknown_threshold) and the accuracy of those sorted.
    A contaminated bale costs more than a rejected item, so this is how to pick the threshold."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    rows = []
    for t in thresholds:
        sort = (conf >= t) & (unknown <= unknown_threshold)
        n = int(sort.sum())
        rows.append({"confidence_threshold": t, "sorted_share": n / max(len(labels), 1), "sorted_accuracy": float((pred[sort] == labels[sort]).mean()) if n else None})
    return rows
