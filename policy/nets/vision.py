"""Compact ResNet-style image encoder: GroupNorm instead of BatchNorm, spatial-softmax head
(docs/references.md §1, scaled down for CPU training). Written here: torchvision does not
install beside the CPU torch wheel. Random crop in training, center crop in eval."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4) or 1, c)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.n1 = _gn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.n2 = _gn(c_out)
        self.skip = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _gn(c_out))
                     if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        return F.relu(self.n2(self.conv2(F.relu(self.n1(self.conv1(x))))) + self.skip(x))


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, 2K): expected image coordinates of K learned keypoint maps."""

    def __init__(self, c_in: int, n_kp: int):
        super().__init__()
        self.kp = nn.Conv2d(c_in, n_kp, 1)

    def forward(self, x):
        B, _, H, W = x.shape
        att = self.kp(x).flatten(2).softmax(-1)  # (B, K, HW)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, H, device=x.device), torch.linspace(-1, 1, W, device=x.device),
                                indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], -1)  # (HW, 2)
        return (att @ grid).flatten(1)


class ImageEncoder(nn.Module):
    """uint8 or float images (B, H, W, 3) -> features (B, out_dim)."""

    def __init__(self, crop: int = 76, widths: tuple[int, ...] = (32, 64, 128), n_kp: int = 32, out_dim: int = 64):
        super().__init__()
        self.crop = crop
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, 2, 2, bias=False), _gn(widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = SpatialSoftmax(c, n_kp)
        self.out = nn.Linear(2 * n_kp, out_dim)
        self.out_dim = out_dim

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, c, c): in training a random window per image (each sample
        its own shift), in eval the center."""
        B, _, H, W = x.shape
        c = self.crop
        if c >= min(H, W):
            return x
        if not self.training:
            i, j = (H - c) // 2, (W - c) // 2
            return x[..., i:i + c, j:j + c]
        offs = torch.arange(c, device=x.device)
        rows = torch.randint(0, H - c + 1, (B, 1), device=x.device) + offs  # (B, c)
        cols = torch.randint(0, W - c + 1, (B, 1), device=x.device) + offs
        b = torch.arange(B, device=x.device)[:, None, None]
        return x.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img.permute(0, 3, 1, 2).float()
        if img.dtype == torch.uint8:
            x = x / 255.0
        x = self._crop(x * 2.0 - 1.0)
        return self.out(self.pool(self.blocks(self.stem(x))))
