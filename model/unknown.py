"""Unknown-item scores: how likely an item belongs to no trained class, in [0, 1].

Five scorers, compared by measurement (training/unknown_eval.py); the chosen one
is stored in the checkpoint's `unknown` entry:
- "msp": 1 - maximum softmax probability;
- "energy": logistic of the negative free energy -T*logsumexp(logits/T);
- "prototype": logistic of the cosine distance from the item's feature to the
  nearest class prototype (class mean of the training features);
- "mahalanobis": the smallest Mahalanobis distance to a class mean, with one
  covariance shared by the classes (shrunk towards its mean variance);
- "knn": the cosine distance to the k-th nearest training feature.
Every fitted scorer is squashed by a logistic whose centre and slope come from
known-class validation data (the 95th percentile and the spread), so that 0.5
means the same for all of them: 95% of known items score below it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("msp", "energy", "prototype", "mahalanobis", "knn")
_ARRAY_KEYS = ("prototypes", "means", "precision", "bank")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _logistic(x: np.ndarray, centre: float, slope: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-slope * (x - centre)))


def raw_scores(method: str, logits: np.ndarray, features: np.ndarray, params: dict[str, Any], temperature: float) -> np.ndarray:
    """Unbounded 'unknown-ness' (higher = more unknown) before the logistic squashing."""
    if method == "msp":
        return 1.0 - softmax(logits, temperature).max(axis=1)
    if method == "energy":
        z = logits / temperature
        m = z.max(axis=1)
        return -(m + np.log(np.exp(z - m[:, None]).sum(axis=1))) * temperature
    if method == "prototype":
        protos = np.asarray(params["prototypes"], np.float32)
        return 1.0 - (_unit(features) @ _unit(protos).T).max(axis=1)
    if method == "mahalanobis":
        means = np.asarray(params["means"], np.float64)
        precision = np.asarray(params["precision"], np.float64)
        f = features.astype(np.float64)
        # (f-m)'P(f-m) expanded into matrix products: 20x faster than the (n, classes, dim) difference tensor
        p_means = precision @ means.T  # (dim, classes)
        d2 = ((f @ precision) * f).sum(axis=1)[:, None] - 2.0 * f @ p_means + (means * p_means.T).sum(axis=1)[None, :]
        return d2.min(axis=1)
    if method == "knn":
        bank = np.asarray(params["bank"], np.float32)
        k = min(int(params["k"]), len(bank))
        f = _unit(features.astype(np.float32))
        sims = f @ _unit(bank).T
        return 1.0 - np.sort(sims, axis=1)[:, -k]
    raise ValueError(f"unknown-item method {method!r} is not one of {', '.join(METHODS)}")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def unknown_scores(logits: np.ndarray, features: np.ndarray, params: dict[str, Any] | None, temperature: float) -> np.ndarray:
    """Scores in [0, 1]. Without fitted parameters, falls back to 1 - max softmax."""
    if not params:
        return raw_scores("msp", logits, features, {}, temperature)
    raw = raw_scores(params["method"], logits, features, params, temperature)
    return _logistic(raw, float(params["centre"]), float(params["slope"]))


def prepare_params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The checkpoint stores arrays as lists (they must also fit ONNX's JSON metadata); convert
    them once at load time, not at every prediction (the k-NN bank is 600 x 192 numbers)."""
    if not params:
        return params
    return {k: (np.asarray(v, np.float32) if k in _ARRAY_KEYS else v) for k, v in params.items()}
