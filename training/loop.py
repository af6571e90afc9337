"""Shared training machinery: the one epoch loop every stage trains with (`train_epoch`),
run folders, epoch checkpoints with resume, JSON-lines logs, progress bars, warm-up + cosine
schedules, and evaluation passes."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from model.student import inference_logits


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda, got {name!r}")
    return torch.device(name)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, floor: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class JsonlLog:
    """Append-only JSON-lines log of epochs (survives resume)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


@dataclass
class TrainState:
    epoch: int = 0
    best_metric: float = -1.0
    step: int = 0


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState, extra: dict[str, Any] | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "state": state.__dict__,
            "extra": extra or {},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        },
        tmp,
    )
    tmp.replace(path)


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[TrainState, dict[str, Any]]:
    d = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(d["model"])
    optimizer.load_state_dict(d["optimizer"])
    if scheduler is not None and d["scheduler"] is not None:
        scheduler.load_state_dict(d["scheduler"])
    torch.set_rng_state(d["rng"]["torch"])
    np.random.set_state(d["rng"]["numpy"])
    random.setstate(d["rng"]["python"])
    return TrainState(**d["state"]), d.get("extra", {})


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 (for a weighted loss)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    w = counts.sum() / (num_classes * np.maximum(counts, 1))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def make_loader(dataset: Any, batch_size: int, shuffle: bool, balance: str = "none", num_workers: int = 0) -> DataLoader:
    """balance='sampler' draws classes uniformly (WeightedRandomSampler); else plain shuffling."""
    sampler = None
    if shuffle and balance == "sampler":
        labels = np.asarray(dataset.labels)
        counts = np.bincount(labels)
        sampler = WeightedRandomSampler((1.0 / counts[labels]).tolist(), num_samples=len(labels), replacement=True)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # no re-fork every epoch: that dominates short GPU epochs
        pin_memory=num_workers > 0 and torch.cuda.is_available(),
        drop_last=shuffle,
    )


GRAD_CLIP = 1.0  # global gradient-norm clip of every training stage

# one batch -> (loss to minimise, the logits its accuracy is counted on, the labels)
StepLoss = Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def clip_and_step(params: Sequence[torch.Tensor], opt: torch.optim.Optimizer, clip: float = GRAD_CLIP) -> None:
    """Clip the gradients already in `params` to a global norm and take the optimiser step (the
    meta stage, which sets its gradients itself, shares this with `train_epoch`)."""
    torch.nn.utils.clip_grad_norm_(list(params), clip)
    opt.step()


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    step_loss: StepLoss,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    desc: str,
    show: bool = True,
) -> tuple[float, float]:
    """One epoch of any stage (teacher, distillation, fine-tuning, the ablation's baselines,
    leave-one-class-out): train mode, the stage's loss per batch, backward, the shared gradient
    clip, an optimiser and a schedule step per batch. Returns (mean loss, training accuracy)."""
    model.train()
    bar = progress(loader, desc, disable=not show)
    loss_sum, correct, seen = 0.0, 0, 0
    for batch in bar:
        loss, logits, y = step_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step([p for p in model.parameters() if p.grad is not None], opt)
        sched.step()
        seen += len(y)
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return loss_sum / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def predict_logits(model: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) over a loader, model in eval mode."""
    outs, ys = [], []
    for x, y in loader:
        out = inference_logits(model(x.to(device)))
        outs.append(out.float().cpu())
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def progress(iterable: Any, desc: str, total: int | None = None, disable: bool = False) -> tqdm:
    return tqdm(iterable, desc=desc, total=total, dynamic_ncols=True, mininterval=1.0, disable=disable)


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and kernels only; none on norms, biases, tokens, positions
    (1-D parameters and the named token/position tensors), whose scale decay would only distort."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "dist_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
