"""The patent's "meta-transformer": a feature-wise affine layer with learned noise scales.

In training mode each forward samples per-sample, per-channel
gamma ~ N(1, softplus(theta_gamma)) and beta ~ N(0, softplus(theta_beta)) and
returns gamma*x + beta; in eval mode (or when disabled) it is the identity.
theta_gamma/theta_beta are ordinary parameters but are trained only by the
first (meta) training, which learns how much feature noise helps the model
generalise to classes it did not see (see training/meta.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class FeatureWiseAffine(nn.Module):
    def __init__(self, d_model: int, init_gamma: float = 0.3, init_beta: float = 0.5) -> None:
        super().__init__()
        self.theta_gamma = nn.Parameter(torch.full((d_model,), _inverse_softplus(init_gamma)))
        self.theta_beta = nn.Parameter(torch.full((d_model,), _inverse_softplus(init_beta)))
        self.enabled = True

    def noise_scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current standard deviations (softplus of the learned thetas)."""
        return F.softplus(self.theta_gamma), F.softplus(self.theta_beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.enabled):
            return x
        sigma_g, sigma_b = self.noise_scales()
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        gamma = 1.0 + torch.randn(shape, device=x.device, dtype=x.dtype) * sigma_g
        beta = torch.randn(shape, device=x.device, dtype=x.dtype) * sigma_b
        return gamma * x + beta
