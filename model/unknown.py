"""Unknown-item scores: how likely an item belongs to no trained class, in [0, 1].

Three scorers, chosen by measurement (training/unknown_eval.py) and stored in
the checkpoint's `unknown` entry:
- "msp": 1 - maximum softmax probability;
- "energy": logistic of the negative free energy -T*logsumexp(logits/T);
- "prototype": logistic of the cosine distance from the item's feature to the
  nearest class prototype (class mean of the training features).
Every fitted scorer is squashed by a logistic whose centre and slope come from
known-class validation data (the 95th percentile and the spread), so that 0.5
means the same for all three: 95% of known items score below it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
        f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)
        p = protos / np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-8)
        return 1.0 - (f @ p.T).max(axis=1)
    raise ValueError(f"unknown-item method {method!r} is not one of msp, energy, prototype")


def unknown_scores(logits: np.ndarray, features: np.ndarray, params: dict[str, Any] | None, temperature: float) -> np.ndarray:
    """Scores in [0, 1]. Without fitted parameters, falls back to 1 - max softmax."""
    if not params:
        return raw_scores("msp", logits, features, {}, temperature)
    raw = raw_scores(params["method"], logits, features, params, temperature)
    return _logistic(raw, float(params["centre"]), float(params["slope"]))
