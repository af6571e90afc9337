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

from model.descriptor import FEATURE_SOURCES, FEATURES_CLASS_TOKEN, FEATURES_IMAGENET, ImageNetDescriptor, descriptor_for, stem_is_imagenet
from model.inference import InferenceNet
from model.student import DistilledViT
from model.unknown import METHODS, raw_scores

KEEP_KNOWN = 0.95
KNN_K = 5  # the k-th neighbour: small, since every class has only a few hundred images
KNN_BANK_PER_CLASS = 100  # training features kept per class: the bank travels in the checkpoint and ONNX metadata


@torch.no_grad()
def logits_and_features(model: DistilledViT, loader: DataLoader, device: torch.device, descriptor: ImageNetDescriptor | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits and the scorer's features (the class token's, or the descriptor's) of every item."""
    net = InferenceNet(model.eval(), descriptor.to(device) if descriptor is not None else None)
    ls, fs, ys = [], [], []
    for x, y in loader:
        logits, feat = net(x.to(device))
        ls.append(logits.cpu().numpy())
        fs.append(feat.cpu().numpy())
        ys.append(y.numpy())
    return np.concatenate(ls), np.concatenate(fs), np.concatenate(ys)


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.stack([features[labels == c].mean(axis=0) for c in range(num_classes)])


def mahalanobis_params(features: np.ndarray, labels: np.ndarray, num_classes: int, shrinkage: float = 0.1) -> dict[str, Any]:
    """Class means and the precision of the shared (within-class) covariance, shrunk towards
    its mean variance so that it stays invertible with fewer samples than dimensions."""
    f = features.astype(np.float64)
    means = class_prototypes(f, labels, num_classes)
    centred = f - means[labels]
    cov = centred.T @ centred / max(1, len(f) - num_classes)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return {"means": means.astype(np.float32).tolist(), "precision": np.linalg.inv(cov).astype(np.float32).tolist()}


def feature_params(method: str, features: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> dict[str, Any]:
    """What a scorer needs from the (unaugmented) training features; empty for the logit scorers."""
    if method == "prototype":
        return {"prototypes": class_prototypes(features, labels, num_classes).astype(np.float32).tolist()}
    if method == "mahalanobis":
        return mahalanobis_params(features, labels, num_classes)
    if method == "knn":
        rng = np.random.default_rng(seed)
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:KNN_BANK_PER_CLASS] for c in range(num_classes)])
        return {"bank": features[np.sort(keep)].astype(np.float32).tolist(), "k": KNN_K}
    if method in METHODS:
        return {}
    raise ValueError(f"unknown-item method {method!r} is not one of {', '.join(METHODS)}")


def fit_scorer(method: str, val_logits: np.ndarray, val_features: np.ndarray, params_from_train: dict[str, Any], temperature: float) -> dict[str, Any]:
    """The scorer's parameters plus the logistic that maps its 95th known-class percentile to 0.5."""
    params: dict[str, Any] = {"method": method, **params_from_train}
    raw = raw_scores(method, val_logits, val_features, params, temperature)
    centre = float(np.quantile(raw, KEEP_KNOWN))
    spread = float(np.std(raw)) or 1.0
    params.update({"centre": centre, "slope": 4.0 / spread, "keep_known": KEEP_KNOWN})
    return params


def scorer_descriptor(model: DistilledViT, features: str, blocks: int | None = None) -> ImageNetDescriptor | None:
    """The descriptor a scorer on `features` needs (None for the class token), refused on a stem
    that is not ImageNet's own."""
    if features == FEATURES_CLASS_TOKEN:
        return None
    if features != FEATURES_IMAGENET:
        raise ValueError(f"unknown-item features {features!r} are not one of {', '.join(FEATURE_SOURCES)}")
    if not stem_is_imagenet(model):
        raise ValueError("the ImageNet descriptor continues the ImageNet network's own stem, and this student's stem holds other "
                         "weights (the fine-tuned teacher's): train it from stem outputs made with teacher-cache --stem-source imagenet, "
                         "or fit the scorer on the class token")
    return descriptor_for(model.cfg, blocks)


def fit_for_model(model: DistilledViT, train_loader: DataLoader, val_loader: DataLoader, device: torch.device, temperature: float, method: str,
                  features: str = FEATURES_CLASS_TOKEN, descriptor_blocks: int | None = None) -> dict[str, Any]:
    """A trained model's scorer: what it needs from the unaugmented training images, its logistic
    from the validation images (the end of `distill`, and `unknown-fit` for a finished checkpoint).
    `features` says what the distance scorers measure: the class token or the ImageNet descriptor
    (of `descriptor_blocks` blocks, None: all; stored with the scorer)."""
    descriptor = scorer_descriptor(model, features, descriptor_blocks)
    _, train_f, train_y = logits_and_features(model, train_loader, device, descriptor)
    val_l, val_f, _ = logits_and_features(model, val_loader, device, descriptor)
    params = fit_scorer(method, val_l, val_f, feature_params(method, train_f, train_y, model.cfg.num_classes), temperature)
    out = {**params, "features": features}
    if descriptor is not None:
        out["descriptor_blocks"] = len(descriptor.blocks)
    return out


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
