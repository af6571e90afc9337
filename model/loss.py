"""The soft distillation loss of the patent (DeiT-style, KL summed over classes, batch mean).

L = (1 - lam) * CE(softmax(Zs), y) + lam * tau^2 * KL(softmax(Zd/tau) || softmax(Zt/tau))

Zs are the class-token logits, Zd the distillation-token logits, Zt the
teacher's. The KL is written with the teacher as the target distribution, the
standard knowledge-distillation direction: sum_c pt_c * (log pt_c - log pd_c).
`hard=True` gives DeiT's hard-label variant: CE against the teacher's argmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    def __init__(
        self,
        tau: float = 3.0,
        lam: float = 0.5,
        hard: bool = False,
        label_smoothing: float = 0.0,
        class_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        self.tau, self.lam, self.hard, self.label_smoothing = tau, lam, hard, label_smoothing
        self.class_weight = class_weight  # optional per-class CE weights (class imbalance)

    def forward(
        self, cls_logits: torch.Tensor, dist_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        ce = F.cross_entropy(cls_logits, target, weight=self.class_weight, label_smoothing=self.label_smoothing)
        if self.hard:
            distill = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=1))
            return (1 - self.lam) * ce + self.lam * distill
        log_pd = F.log_softmax(dist_logits / self.tau, dim=1)
        log_pt = F.log_softmax(teacher_logits / self.tau, dim=1)
        kl = F.kl_div(log_pd, log_pt, reduction="batchmean", log_target=True)
        return (1 - self.lam) * ce + self.lam * self.tau**2 * kl
