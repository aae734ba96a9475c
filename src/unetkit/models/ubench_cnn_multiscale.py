"""U-Bench CNNs built around multi-scale blocks: DC-UNet, KiU-Net (family ``ubench-cnn``).

- ``dcunet``: Lou, Guan, Loew, "DC-UNet: Rethinking the U-Net Architecture with Dual Channel
  Efficient CNN for Medical Images Segmentation", SPIE Medical Imaging 2021 (arXiv:2006.00414),
  Fig. 3-5: MultiResUNet's layout (Res paths of length 4..1, 2x2 transposed convs, U = 32..512,
  alpha 1.67) with every MultiRes block replaced by a dual-channel block: two parallel chains of three
  3x3 conv-BN-ReLU (widths W/6, W/3, W/2), each concatenated and batch-normalized, summed, ReLU, BN
  (no 1x1 shortcut, as in the official Keras code). Official code: github.com/AngeLouCN/DC-UNet (Keras; a PyTorch port
  in U-Bench ``models/CNN/DC_Unet``). It is :class:`~unetkit.models.multiresunet.MultiResUNet` with
  that block, so it takes the plan topology and 3D as MultiResUNet does.
- ``kiunet``: Valanarasu, Sindagi, Hacihaliloglu, Patel, "KiU-Net: Towards Accurate Segmentation of
  Biomedical Images using Over-complete Representations", MICCAI 2020 (arXiv:2006.04878), and
  "KiU-Net: Overcomplete Convolutional Architectures for Biomedical Image and Volumetric
  Segmentation", IEEE TMI 2021 (arXiv:2010.01663), Fig. 3-4: a U-Net branch (3x3 conv, max pool /2,
  BN, ReLU; widths 16, 32, 64) and a Ki-Net branch (3x3 conv, bilinear x2, BN, ReLU), joined at every
  level by cross-residual fusion blocks (CRFB: 3x3 conv + BN + ReLU, resized to the other branch and
  added), additive skips in both branches, the two branches summed before a 1x1 head. Official code:
  github.com/jeya-maria-jose/KiU-Net-pytorch ``arch/ae.py`` class ``kiunet`` (U-Bench ``KiU_Net``).

Reference code was read through the code search; all code here is our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.models.multiresunet import MultiResUNet, multires_widths
from unetkit.models.registry import register_model
from unetkit.models.topology import IntOrSeq, Shape
from unetkit.models.unet_classic import ConvNormReLU, norm_layer, resolve_topology, topology_kwargs

_PLAN_NOTE = ("fixed design: the plan keywords n_stages, features_per_stage, kernel_sizes, strides are accepted "
              "and ignored")


# ============================================================================================ DC-UNet
class DualChannelBlock(nn.Module):
    """DC-UNet's DC block: two parallel chains of three 3x3 conv-BN-ReLU (widths int(W*0.167),
    int(W*0.333), int(W*0.5), W = alpha * u), each chain's outputs concatenated and batch-normalized,
    summed, ReLU, BN. No 1x1 shortcut: the official Keras block has it commented out (U-Bench's
    PyTorch port adds one back). Same signature as MultiResBlock."""

    def __init__(self, spatial_dims: int, in_channels: int, u: int, kernel_size: Shape, norm: str,
                 alpha: float = 1.67) -> None:
        super().__init__()
        widths = multires_widths(u, alpha)
        self.out_channels = sum(widths)
        self.chains = nn.ModuleList()
        for _ in range(2):
            cins = (in_channels,) + widths[:-1]
            self.chains.append(nn.ModuleList(ConvNormReLU(spatial_dims, ci, co, kernel_size, norm, bias=False)
                                             for ci, co in zip(cins, widths)))
        self.chain_norms = nn.ModuleList(norm_layer(norm, spatial_dims, self.out_channels) for _ in range(2))
        self.norm_out = norm_layer(norm, spatial_dims, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = 0
        for chain, norm in zip(self.chains, self.chain_norms):
            outs, h = [], x
            for conv in chain:
                h = conv(h)
                outs.append(h)
            y = y + norm(torch.cat(outs, dim=1))
        return self.norm_out(torch.relu(y))


class DCUNet(MultiResUNet):
    """DC-UNet: MultiResUNet's Res paths and decoder with dual-channel blocks."""

    block_class = DualChannelBlock


DCUNET_FEATURES = (32, 64, 128, 256, 512)


def _dcunet_defaults(spatial_dims: int) -> dict[str, Any]:
    topo = resolve_topology(spatial_dims, DCUNET_FEATURES, None, None, None, None)
    return {**topology_kwargs(topo), "alpha": 1.67, "norm": "batch"}


@register_model(family="ubench-cnn", deep_supervision=False, defaults=_dcunet_defaults,
                paper="Lou, Guan, Loew, DC-UNet: Rethinking the U-Net Architecture with Dual Channel Efficient CNN "
                      "for Medical Images Segmentation, SPIE Medical Imaging 2021, arXiv:2006.00414 (Fig. 3-5; "
                      "no printed count found: official Keras code 10,069,928 at 3 in, 1 class)",
                tiny_kwargs={"n_stages": 4, "features_per_stage": [6, 8, 16, 32]},
                extra={"tags": ["cnn", "multiscale", "residual"], "paper_params": None,
                       "paper_setup": "no count found in the paper's text (its parameter table is an image we "
                                      "could not read); official code (AngeLouCN/DC-UNet model.py, Keras), 2D, "
                                      "3 in, 1 class, U = 32..512: 10,069,928 (Keras total: BN moving statistics "
                                      "included, no BN scale in conv-BN units)",
                       "divisible_by": 16})
def dcunet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
           n_stages: int | None = None, features_per_stage: IntOrSeq | None = None, kernel_sizes: Any = None,
           strides: Any = None, alpha: float = 1.67, norm: str = "batch") -> DCUNet:
    """DC-UNet: MultiResUNet with dual-channel blocks (2D as published; 3D with 3D convolutions).

    Default: 5 levels, U = 32, 64, 128, 256, 512, alpha 1.67, batch norm; patches multiples of 16.
    The plan topology (stages, widths, kernels, strides) is taken as MultiResUNet takes it.
    """
    topo = resolve_topology(spatial_dims, DCUNET_FEATURES, n_stages, features_per_stage, kernel_sizes, strides)
    return DCUNet(spatial_dims, in_channels, num_classes, topo, alpha, norm)
