"""`wastesort-train meta`: the patent's first training (learning-to-learn the feature-wise transform).

Each meta-iteration:
1. sample 5 classes: 4 pseudo-seen, 1 pseudo-unseen;
2. L_cls: cross-entropy on a pseudo-seen batch with the feature-wise transform ACTIVE;
3. a virtual SGD step of the backbone, theta' = theta - alpha * dL_cls/dtheta, kept in the
   autograd graph (create_graph=True), so theta' depends on the transform's noise scales phi;
4. L_pu: with the transform INACTIVE and the stepped weights theta' (torch.func.functional_call),
   a prototype task over the 4 seen classes plus the unseen one: support features give class
   means, queries are classified by negative squared distance;
5. phi <- phi - beta * dL_pu/dphi: the only path from phi to L_pu runs through the second-order
   term d(theta')/dphi, so a first-order shortcut would give exactly zero;
6. theta <- AdamW step with dL_cls/dtheta.
The model learns classification while phi learns how much feature noise makes a step on seen
classes generalise to an unseen one (Tseng et al., "Cross-domain few-shot classification via
learned feature-wise transformation", applied here to class splits).
"""

from __future__ import annotations

import argparse
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Dataset

from model.config import StudentConfig
from model.preprocess import PreprocessConfig
from model.student import DistilledViT

from model.config import LITE_STAGE_STRIDES

from .augment import belt_augmentation
from .loop import clip_and_step, param_groups
from .student_init import copy_stem_from_teacher, freeze_stem, stem_for_features, student_preprocess
from .view_cache import ViewCache
from .view_data import StemFeatureViews
from .data import CachedImageDataset, get_split
from .loop import JsonlLog, TrainState, Timer, load_state, predict_logits, make_loader, progress, resolve_device, save_state, seed_everything

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--iters-per-epoch", type=int, default=50, help="checkpoint/log interval")
    p.add_argument("--lr", type=float, default=1e-3, help="model (AdamW) learning rate")
    p.add_argument("--inner-lr", type=float, default=0.05, help="alpha: the virtual step size")
    p.add_argument("--affine-lr", type=float, default=1e-2, help="beta: learning rate of theta_gamma/theta_beta")
    p.add_argument("--seen-per-class", type=int, default=5)
    p.add_argument("--support", type=int, default=2)
    p.add_argument("--query", type=int, default=2)
    p.add_argument("--config", type=Path, default=None, help="StudentConfig as JSON (default: the shipped config)")
    p.add_argument("--stem-from-teacher", type=Path, default=None, help="CNN-stem students: initialise the stem from this fine-tuned EfficientNet-Lite teacher")
    p.add_argument("--views", type=Path, default=None, help="with --stem-features: the view cache those stem outputs belong to (its teacher's stem becomes the student's)")
    p.add_argument("--stem-features", type=Path, default=None, help="train from the stored stem outputs of the cached views (teacher-cache --student-config): a frozen stem is then not run at every iteration, so an iteration costs the transformer only")


@dataclass
class Episode:
    seen_x: torch.Tensor
    seen_y: torch.Tensor
    support_x: torch.Tensor
    support_y: torch.Tensor  # 0..4 within the episode
    query_x: torch.Tensor
    query_y: torch.Tensor


class EpisodeSampler:
    """Draws pseudo-seen / pseudo-unseen class splits and their images."""

    def __init__(self, dataset: Dataset, num_classes: int, n_seen: int = 4, rng: random.Random | None = None) -> None:
        if num_classes < n_seen + 1:
            raise ValueError(f"meta training needs at least {n_seen + 1} classes, the data has {num_classes}")
        self.ds = dataset
        self.n_seen = n_seen
        self.rng = rng or random.Random(0)
        self.by_class = [[i for i, y in enumerate(dataset.labels) if y == c] for c in range(num_classes)]  # type: ignore[attr-defined]

    def _images(self, idx: list[int]) -> torch.Tensor:
        return torch.stack([self.ds[i][0] for i in idx])

    def sample(self, seen_per_class: int, support: int, query: int) -> Episode:
        classes = self.rng.sample(range(len(self.by_class)), self.n_seen + 1)
        seen, unseen = classes[: self.n_seen], classes[self.n_seen]
        seen_idx = [i for c in seen for i in self.rng.sample(self.by_class[c], seen_per_class)]
        seen_y = torch.tensor([self.ds.labels[i] for i in seen_idx])  # type: ignore[attr-defined]
        sup_idx, qry_idx, sup_y, qry_y = [], [], [], []
        for k, c in enumerate(seen + [unseen]):
            pick = self.rng.sample(self.by_class[c], support + query)
            sup_idx += pick[:support]
            qry_idx += pick[support:]
            sup_y += [k] * support
            qry_y += [k] * query
        return Episode(self._images(seen_idx), seen_y, self._images(sup_idx), torch.tensor(sup_y), self._images(qry_idx), torch.tensor(qry_y))


class _Features(nn.Module):
    """Lets functional_call run forward_features (it calls forward); from_stem: the inputs are
    stored stem outputs, not images."""

    def __init__(self, student: DistilledViT, from_stem: bool = False) -> None:
        super().__init__()
        self.student, self.from_stem = student, from_stem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.student.features_from_stem(x) if self.from_stem else self.student.forward_features(x))[0]


class RandomStoredView(Dataset):
    """Photo i as one of its stored stem outputs, drawn afresh at every access (the meta stage's
    augmentation when it trains from stored views)."""

    def __init__(self, views: StemFeatureViews, seed: int) -> None:
        self.views, self.labels = views, views.photo_labels
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        grid, label, _ = self.views[i * self.views.views + int(self.rng.integers(self.views.views))]
        return grid, label


def prototype_loss(support_f: torch.Tensor, support_y: torch.Tensor, query_f: torch.Tensor, query_y: torch.Tensor, n_way: int) -> torch.Tensor:
    protos = torch.stack([support_f[support_y == k].mean(0) for k in range(n_way)])
    logits = -torch.cdist(query_f, protos).pow(2) / query_f.shape[1] ** 0.5
    return F.cross_entropy(logits, query_y)


def meta_step(
    model: DistilledViT,
    episode: Episode,
    inner_lr: float,
    model_opt: torch.optim.Optimizer,
    affine_opt: torch.optim.Optimizer,
    from_stem: bool = False,
) -> dict[str, float]:
    """One learning-to-learn iteration (see the module docstring). Returns the losses.

    Attention runs on SDPA's math kernel here: the fused CPU kernel has no double backward.
    """
    model.train()
    wrapper = _Features(model, from_stem)
    backbone = {n: p for n, p in wrapper.named_parameters() if "theta_" not in n and p.requires_grad}  # a frozen stem stays out
    affine = {n: p for n, p in wrapper.named_parameters() if "theta_" in n}
    with sdpa_kernel([SDPBackend.MATH]):
        model.set_feature_affine(True)
        cls_logits, dist_logits = model.forward_from_stem(episode.seen_x) if from_stem else model(episode.seen_x)
        l_cls = (F.cross_entropy(cls_logits, episode.seen_y) + F.cross_entropy(dist_logits, episode.seen_y)) / 2
        grads = torch.autograd.grad(l_cls, list(backbone.values()), create_graph=True, allow_unused=True)
        stepped = {n: (p - inner_lr * g if g is not None else p) for (n, p), g in zip(backbone.items(), grads)}

        model.set_feature_affine(False)
        params = {**stepped, **affine}
        sup_f = functional_call(wrapper, params, (episode.support_x,))
        qry_f = functional_call(wrapper, params, (episode.query_x,))
        l_pu = prototype_loss(sup_f, episode.support_y, qry_f, episode.query_y, int(episode.support_y.max()) + 1)
        affine_grads = torch.autograd.grad(l_pu, list(affine.values()))
        model.set_feature_affine(True)

    affine_opt.zero_grad(set_to_none=True)
    for p, g in zip(affine.values(), affine_grads):
        p.grad = g.detach()
    clip_and_step(list(affine.values()), affine_opt)
    model_opt.zero_grad(set_to_none=True)
    for p, g in zip(backbone.values(), grads):
        p.grad = None if g is None else g.detach()
    clip_and_step([p for p in backbone.values() if p.grad is not None], model_opt)
    return {
        "l_cls": float(l_cls.detach()),
        "l_pu": float(l_pu.detach()),
        "affine_grad_norm": float(torch.sqrt(sum((g**2).sum() for g in affine_grads))),
    }


def sigma_summary(model: DistilledViT) -> dict[str, float]:
    """Mean, spread and range of the learned noise scales over all channels of all blocks: the mean
    alone hides channels that moved in opposite directions."""
    with torch.no_grad():
        sg, sb = (torch.cat(t) for t in zip(*(layer.noise_scales() for layer in model.affine_layers())))
    out: dict[str, float] = {}
    for name, t in (("sigma_gamma", sg), ("sigma_beta", sb)):
        out.update({f"{name}_mean": float(t.mean()), f"{name}_std": float(t.std()), f"{name}_min": float(t.min()), f"{name}_max": float(t.max())})
    return out


def load_config(path: Path | None, num_classes: int) -> StudentConfig:
    import json

    if path is None:
        return StudentConfig(num_classes=num_classes)
    return StudentConfig.from_dict({**json.loads(path.read_text()), "num_classes": num_classes})


def run(args: argparse.Namespace) -> dict[str, float]:
    seed_everything(args.seed)
    device = resolve_device(args.device)
    if device.type != "cpu":
        log.info("meta training runs on %s", device)
    run_dir: Path = args.run_dir
    names, train, val, _ = get_split(args.data, run_dir, args.val_fraction, args.seed)
    cfg = load_config(args.config, len(names))
    pre = student_preprocess(cfg)
    model = DistilledViT(cfg).to(device)
    from_stem = args.stem_features is not None
    train_ds: Dataset
    if from_stem:
        if args.views is None:
            raise ValueError("meta --stem-features goes with --views (the cache whose teacher made them)")
        cache = ViewCache.load(args.views)
        cache.check_matches(names, [s.path for s in train])
        stem_for_features(model, args.stem_features, Path(cache.teacher))
        train_ds = RandomStoredView(StemFeatureViews(np.load(args.stem_features, mmap_mode="r"), [s.label for s in train], cache.logits), args.seed)
    else:
        train_ds = CachedImageDataset(train, pre, belt_augmentation(*cfg.image_size))
    val_dl = make_loader(CachedImageDataset(val, pre), 64, False)
    if args.stem_from_teacher is not None:
        copy_stem_from_teacher(model, args.stem_from_teacher)
    freeze_stem(model, len(LITE_STAGE_STRIDES))  # a CNN stem is not meta-trained: the transformer above it is
    affine_ids = {id(p) for p in model.affine_parameters()}
    groups = param_groups(model, 0.05)  # the noise scales have their own optimiser (step 5)
    for g in groups:
        g["params"] = [p for p in g["params"] if id(p) not in affine_ids]
    model_opt = torch.optim.AdamW(groups, lr=args.lr)
    affine_opt = torch.optim.Adam(model.affine_parameters(), lr=args.affine_lr)
    sampler = EpisodeSampler(train_ds, len(names), rng=random.Random(args.seed))
    state, state_path, logger = TrainState(), run_dir / "meta_state.pt", JsonlLog(run_dir / "meta_log.jsonl")
    if args.resume and state_path.is_file():
        state, extra = load_state(state_path, model, model_opt, None)
        affine_opt.load_state_dict(extra["affine_opt"])
        log.info("resumed meta training at iteration %d", state.step)
    if state.step == 0:
        log.info("noise scales before the first training: %s", sigma_summary(model))
    timer = Timer()
    while state.step < args.iterations:
        n = min(args.iters_per_epoch, args.iterations - state.step)
        bar = progress(range(n), f"meta {state.step}/{args.iterations}")
        sums = {"l_cls": 0.0, "l_pu": 0.0, "affine_grad_norm": 0.0}
        for _ in bar:
            ep = sampler.sample(args.seen_per_class, args.support, args.query)
            ep = Episode(*(t.to(device) for t in (ep.seen_x, ep.seen_y, ep.support_x, ep.support_y, ep.query_x, ep.query_y)))
            out = meta_step(model, ep, args.inner_lr, model_opt, affine_opt, from_stem)
            for k in sums:
                sums[k] += out[k]
            state.step += 1
            bar.set_postfix(l_cls=f"{out['l_cls']:.3f}", l_pu=f"{out['l_pu']:.3f}")
        model.eval()
        logits, ys = predict_logits(model, val_dl, device)
        val_acc = float((logits.argmax(1) == ys).float().mean())
        rec = {
            "stage": "meta",
            "iteration": state.step,
            **{k: v / n for k, v in sums.items()},
            "val_acc": val_acc,
            **sigma_summary(model),
            "elapsed_s": timer.elapsed(),
        }
        logger.write(rec)
        log.info("%s", rec)
        state.epoch += 1
        torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(), "class_names": names, "val_acc": val_acc}, run_dir / "meta_student.pt")
        save_state(state_path, model, model_opt, None, state, {"affine_opt": affine_opt.state_dict()})
    return {"iterations": state.step, "val_acc": float(np.round(val_acc, 4)) if args.iterations else 0.0}
