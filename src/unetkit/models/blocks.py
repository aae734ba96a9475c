"""Building blocks shared by every U-Net family: conv-norm-act, residual blocks, the U-Net decoder.

Every family module (``plain_unet.py``, ``resenc_unet.py``, and the model-zoo families added later)
builds its networks from these pieces, so each piece exists once. The blocks follow the
conventions of nnU-Net v2 (Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021, Fig. 2 and Supplementary
Note 3) as built by dynamic-network-architectures 0.4.4:

- convolution with bias, "same" padding ``(k - 1) // 2``, the stride on the first convolution
  of a stage (strided-convolution downsampling, no pooling);
- instance normalization, affine, eps 1e-5;
- leaky ReLU with negative slope 0.01, in place;
- transposed-convolution upsampling with kernel = stride, concatenation skips;
- a 1x1 segmentation head per decoder stage (deep supervision);
- He (Kaiming normal) initialization for the leaky ReLU slope 1e-2, biases zero.

Dimension (2D or 3D) is an argument of every block, never a copy of the code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Leaky ReLU slope used by nnU-Net (and by its He initialization).
LEAKY_SLOPE = 1e-2
#: Instance-norm epsilon used by nnU-Net plans (``norm_op_kwargs = {"eps": 1e-5, "affine": True}``).
NORM_EPS = 1e-5

Shape = tuple[int, ...]


def conv_class(spatial_dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` or ``nn.Conv3d`` for 2 or 3 spatial dimensions."""
    return {2: nn.Conv2d, 3: nn.Conv3d}[_check_dims(spatial_dims)]


def transposed_conv_class(spatial_dims: int) -> type[nn.ConvTranspose2d] | type[nn.ConvTranspose3d]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` for 2 or 3 spatial dimensions."""
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[_check_dims(spatial_dims)]


def avg_pool_class(spatial_dims: int) -> type[nn.AvgPool2d] | type[nn.AvgPool3d]:
    """``nn.AvgPool2d`` or ``nn.AvgPool3d`` for 2 or 3 spatial dimensions."""
    return {2: nn.AvgPool2d, 3: nn.AvgPool3d}[_check_dims(spatial_dims)]


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format a 4D/5D tensor is laid out in (channels-last or the default)."""
    if x.dim() in (4, 5) and not x.is_contiguous():
        channels_last = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        if x.is_contiguous(memory_format=channels_last):
            return channels_last
    return torch.contiguous_format


def in_layout_of(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in the memory layout of ``like``. Layers that flatten voxels to tokens and reshape a
    transposed result back otherwise hand the next stage a channels-last tensor in a channels-first
    network (mixed layouts: extra copies, and kernels the rest of the model never uses)."""
    return out.contiguous(memory_format=memory_format_of(like))


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return spatial_dims


def same_padding(kernel_size: Sequence[int]) -> Shape:
    """Padding that keeps the size for odd kernels: ``(k - 1) // 2`` per axis (as nnU-Net)."""
    return tuple((k - 1) // 2 for k in kernel_size)


class InstanceNorm(nn.Module):
    """Instance normalization with a per-channel affine transform (Ulyanov et al., arXiv:1607.08022).

    Same parameters (``weight``, ``bias`` of shape ``(C,)``), same state-dict keys and the same
    numbers as ``nn.InstanceNorm{2,3}d(C, eps=1e-5, affine=True)`` (nnU-Net's norm): each sample's
    channel is normalized over its spatial axes with the biased variance. It is computed with
    ``F.group_norm`` with one group per channel, which is the same formula, because PyTorch's CPU
    group-norm kernel is 2-3x faster than its instance-norm kernel (which reshapes to a batch norm
    over ``B*C`` channels) in forward and backward; see docs/models.md for the measurements.
    """

    def __init__(self, num_channels: int, eps: float = NORM_EPS) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_channels, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine=True"


class ConvNormAct(nn.Module):
    """Convolution -> instance norm -> (optional) leaky ReLU: nnU-Net's basic unit.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input feature maps.
        out_channels: output feature maps.
        kernel_size: per-axis kernel (odd sizes keep the spatial size).
        stride: per-axis stride; the output size is ``input // stride`` for odd kernels.
        bias: convolution bias (nnU-Net plans use ``conv_bias=True``; the residual projection uses
            ``False``).
        act: apply the leaky ReLU (the last unit of a residual branch has none: the activation
            comes after the addition).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 kernel_size: Sequence[int], stride: Sequence[int], bias: bool = True,
                 act: bool = True) -> None:
        super().__init__()
        self.stride = tuple(stride)
        self.out_channels = out_channels
        self.conv = conv_class(spatial_dims)(in_channels, out_channels, tuple(kernel_size), self.stride,
                                             padding=same_padding(kernel_size), bias=bias)
        self.norm = InstanceNorm(out_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))

    def feature_map_size(self, input_size: Sequence[int]) -> tuple[int, Shape]:
        """(output voxels x channels, output spatial size) for an input of ``input_size``."""
        out = tuple(i // s for i, s in zip(input_size, self.stride))
        return self.out_channels * _prod(out), out


class StackedConvs(nn.Sequential):
    """``n`` ConvNormAct units; the first carries the stride (a plain U-Net stage, nnU-Net Fig. 2)."""

    def __init__(self, spatial_dims: int, n_convs: int, in_channels: int, out_channels: int,
                 kernel_size: Sequence[int], first_stride: Sequence[int], bias: bool = True) -> None:
        if n_convs < 1:
            raise ValueError(f"a stage needs at least one convolution, got {n_convs}")
        ones = (1,) * spatial_dims
        super().__init__(*[
            ConvNormAct(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                        first_stride if i == 0 else ones, bias)
            for i in range(n_convs)])
        self.out_channels = out_channels

    def feature_map_size(self, input_size: Sequence[int]) -> tuple[int, Shape]:
        total, size = 0, tuple(input_size)
        for unit in self:
            n, size = unit.feature_map_size(size)
            total += n
        return total, size


class BasicBlockD(nn.Module):
    """Residual basic block, ResNet-D variant (He et al., "Bag of Tricks for Image Classification",
    CVPR 2019, Fig. 2c), as used by nnU-Net's residual encoder (Isensee et al., "nnU-Net Revisited",
    MICCAI 2024, Sec. 3).

    Main branch: ConvNormAct(k, stride) -> conv(k) -> norm. Shortcut: identity, or when the block
    changes resolution or width, average pooling (kernel = stride) followed by a 1x1 convolution
    without bias and a norm (the "D" trick: no information is skipped by a strided 1x1 conv). The
    sum goes through the leaky ReLU.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 kernel_size: Sequence[int], stride: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        ones = (1,) * spatial_dims
        self.stride = tuple(stride)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride, bias)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, kernel_size, ones, bias, act=False)
        has_stride = any(s != 1 for s in self.stride)
        shortcut: list[nn.Module] = []
        if has_stride:
            shortcut.append(avg_pool_class(spatial_dims)(self.stride, self.stride))
        if in_channels != out_channels:
            shortcut.append(ConvNormAct(spatial_dims, in_channels, out_channels, ones, ones, bias=False, act=False))
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()
        self.act = nn.LeakyReLU(LEAKY_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        out += self.shortcut(x)  # in place: the norm's output is not saved for backward
        return self.act(out)

    def feature_map_size(self, input_size: Sequence[int]) -> tuple[int, Shape]:
        """Counts conv1, conv2 and (if any) the projected shortcut, as dynamic-network-architectures."""
        n, out = self.conv1.feature_map_size(input_size)
        total = 2 * n
        if self.in_channels != self.out_channels or tuple(out) != tuple(input_size):
            total += n
        return total, out


class StackedResBlocks(nn.Sequential):
    """``n`` BasicBlockD blocks; the first carries the stride (a residual encoder stage)."""

    def __init__(self, spatial_dims: int, n_blocks: int, in_channels: int, out_channels: int,
                 kernel_size: Sequence[int], first_stride: Sequence[int], bias: bool = True) -> None:
        if n_blocks < 1:
            raise ValueError(f"a residual stage needs at least one block, got {n_blocks}")
        ones = (1,) * spatial_dims
        super().__init__(*[
            BasicBlockD(spatial_dims, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                        first_stride if i == 0 else ones, bias)
            for i in range(n_blocks)])
        self.out_channels = out_channels

    def feature_map_size(self, input_size: Sequence[int]) -> tuple[int, Shape]:
        total, size = 0, tuple(input_size)
        for block in self:
            n, size = block.feature_map_size(size)
            total += n
        return total, size


class UNetDecoder(nn.Module):
    """The plain-convolution U-Net decoder of nnU-Net (Ronneberger et al., MICCAI 2015, Fig. 1;
    nnU-Net Fig. 2): per stage, from the bottleneck up, a transposed convolution (kernel = stride
    of the encoder stage it undoes, with a bias when the plan's ``conv_bias`` is true, as in
    nnU-Net plans) to the skip's width,
    concatenation with the skip, ``n`` ConvNormAct units, and a 1x1 segmentation head.

    All heads are always built (so a model trained with deep supervision loads without it, and
    the parameter count does not depend on the flag); ``deep_supervision`` only decides which are
    evaluated.

    Args:
        spatial_dims: 2 or 3.
        encoder_channels: width of each encoder stage, shallowest first.
        encoder_strides: stride of each encoder stage (the first is usually all ones).
        kernel_sizes: kernel of each encoder stage; a decoder stage uses its skip's kernel.
        n_conv_per_stage: convolutions per decoder stage, deepest decoder stage first (nnU-Net's
            ``n_conv_per_stage_decoder`` order: ``len(encoder_channels) - 1`` entries).
        num_classes: output channels of each head.
        bias: bias of the convolutions and transposed convolutions.
    """

    def __init__(self, spatial_dims: int, encoder_channels: Sequence[int], encoder_strides: Sequence[Shape],
                 kernel_sizes: Sequence[Shape], n_conv_per_stage: Sequence[int], num_classes: int,
                 bias: bool = True) -> None:
        super().__init__()
        n = len(encoder_channels)
        if len(n_conv_per_stage) != n - 1:
            raise ValueError(f"n_conv_per_stage_decoder needs {n - 1} entries (one per decoder stage), "
                             f"got {len(n_conv_per_stage)}: {list(n_conv_per_stage)}")
        self.num_classes = num_classes
        self.encoder_channels = tuple(encoder_channels)
        self.encoder_strides = tuple(tuple(s) for s in encoder_strides)
        upconv = transposed_conv_class(spatial_dims)
        conv = conv_class(spatial_dims)
        ups, stages, heads = [], [], []
        for d in range(n - 1):  # d = 0 is the deepest decoder stage
            below, skip = encoder_channels[n - 1 - d], encoder_channels[n - 2 - d]
            stride = self.encoder_strides[n - 1 - d]
            ups.append(upconv(below, skip, stride, stride, bias=bias))
            stages.append(StackedConvs(spatial_dims, n_conv_per_stage[d], 2 * skip, skip,
                                       kernel_sizes[n - 2 - d], (1,) * spatial_dims, bias))
            heads.append(conv(skip, num_classes, 1, 1, 0, bias=True))
        self.upsample = nn.ModuleList(ups)
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)
        self.deep_supervision = True

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        x = skips[-1]
        outputs: list[torch.Tensor] = []
        last = len(self.stages) - 1
        for d, (up, stage, head) in enumerate(zip(self.upsample, self.stages, self.heads)):
            x = stage(torch.cat((up(x), skips[-(d + 2)]), dim=1))
            if self.deep_supervision or d == last:
                outputs.append(head(x))
        if not self.deep_supervision:
            return outputs[0]
        return outputs[::-1]

    def feature_map_size(self, input_size: Sequence[int], deep_supervision: bool) -> int:
        """Feature-map elements of the decoder for an encoder input of ``input_size`` (see
        ``topology.conv_feature_map_size``): every decoder stage at its skip's size counts its
        convolutions, its transposed convolution and (if evaluated) its head."""
        sizes, size = [], tuple(input_size)
        for stride in self.encoder_strides[:-1]:
            size = tuple(i // s for i, s in zip(size, stride))
            sizes.append(size)
        total = 0
        last = len(self.stages) - 1
        for d, stage in enumerate(self.stages):
            size = sizes[-(d + 1)]
            n, _ = stage.feature_map_size(size)
            total += n + self.encoder_channels[-(d + 2)] * _prod(size)
            if deep_supervision or d == last:
                total += self.num_classes * _prod(size)
        return total


def init_he_(module: nn.Module) -> None:
    """nnU-Net's ``InitWeights_He(neg_slope=1e-2)``: Kaiming-normal weights (He et al., ICCV 2015)
    for every (transposed) convolution, zero biases. Use with ``model.apply``."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=LEAKY_SLOPE)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def zero_last_norm_in_residual_(module: nn.Module) -> None:
    """Zero the affine of the last norm of each residual branch, so each block starts as its
    shortcut (Goyal et al., "Accurate, Large Minibatch SGD", 2017, Sec. 5.1; nnU-Net's
    ``init_last_bn_before_add_to_0``). Use with ``model.apply`` after ``init_he_``."""
    if isinstance(module, BasicBlockD):
        nn.init.zeros_(module.conv2.norm.weight)
        nn.init.zeros_(module.conv2.norm.bias)


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
