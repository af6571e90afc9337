"""Fit the unknown-item scorer of a trained student (stored in the checkpoint's `unknown` entry).

Prototypes are the class means of the class-token features on the (unaugmented) training
images. For each scorer the raw score is squashed by a logistic whose centre is the 95th
percentile of the known-class validation scores, so `unknown >= 0.5` keeps 95% of known items:
the daemon's `unknown_threshold = 0.5` means exactly that operating point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from model.inference import InferenceNet
from model.student import DistilledViT
from model.unknown import raw_scores

KEEP_KNOWN = 0.95


@torch.no_grad()
def logits_and_features(model: DistilledViT, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    net = InferenceNet(model.eval())
    ls, fs, ys = [], [], []
    for x, y in loader:
        logits, feat = net(x.to(device))
        ls.append(logits.cpu().numpy())
        fs.append(feat.cpu().numpy())
        ys.append(y.numpy())
    return np.concatenate(ls), np.concatenate(fs), np.concatenate(ys)


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])


def fit_scorer(method: str, val_logits: np.ndarray, val_features: np.ndarray, prototypes: np.ndarray | None, temperature: float) -> dict[str, Any]:
    params: dict[str, Any] = {"method": method}
    if method == "prototype":
        assert prototypes is not None
        params["prototypes"] = prototypes.astype(np.float32).tolist()
    raw = raw_scores(method, val_logits, val_features, params, temperature)
    centre = float(np.quantile(raw, KEEP_KNOWN))
    spread = float(np.std(raw)) or 1.0
    params.update({"centre": centre, "slope": 4.0 / spread, "keep_known": KEEP_KNOWN})
    return params


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(score(unknown) > score(known)), ties counted half (Mann-Whitney U)."""
    scores = np.concatenate([known, unknown])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks of ties
    for v in np.unique(scores):
        sel = scores == v
        if sel.sum() > 1:
            ranks[sel] = ranks[sel].mean()
    r_unknown = ranks[len(known) :].sum()
    n1, n2 = len(unknown), len(known)
    return float((r_unknown - n1 * (n1 + 1) / 2) / (n1 * n2))


def rejected_at_keep(known: np.ndarray, unknown: np.ndarray, keep: float = KEEP_KNOWN) -> float:
    """Share of unknown items scoring above the threshold that keeps `keep` of known items."""
    threshold = np.quantile(known, keep)
    return float((unknown > threshold).mean())
