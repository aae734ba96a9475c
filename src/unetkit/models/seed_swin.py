"""Swin-transformer U-Nets of the seed papers (family ``seed_swin``): Attention Swin U-Net.

- ``attention_swin_unet``: Aghdam, Azad, Zarvani, Merhof, "Attention Swin U-Net: Cross-Contextual
  Attention Mechanism for Skin Lesion Segmentation", ISBI 2023 (arXiv:2210.16898). Swin-Unet
  (``swin_unet.py``, Cao et al. 2022) whose decoder borrows the encoder's attention: reference code
  NITR098/AttSwinUNet (``configs/swin_attention_unet.py``: Swin-T, patch 4, C = 96, depths
  2, 2, 6, 2, heads 3, 6, 12, 24, window 7, decoder mirroring the encoder depths;
  ``operationaddatten='+'``): every encoder Swin block returns its window-attention probabilities,
  and each Swin block of the decoder stage at the same level adds the probabilities of that
  level's last encoder block to its own (``A_dec + A_enc``) before weighting the values. The
  mechanism has no parameters: the count equals Swin-Unet's with the same depths.

  What we chose, and why: the released code computes ``A_dec + A_enc`` after its Swin block has
  already used ``A_dec`` alone, so as released the sum never reaches the output (its network is
  plain Swin-Unet); we apply the sum where the paper puts it, in the decoder's attention. The
  paper's text beyond the abstract and its parameter figure were not reachable to us; our count
  is recorded as a labelled snapshot (tests/test_zoo_seed_papers.py). The reference's other,
  experimental skip modes (CrossViT / XCiT modules) are not built. Like ``swin_unet``: 2D, windows
  shrink and maps are padded at run time, patches not multiples of 32 are padded and cropped, no
  deep supervision. The encoder and decoder windows at one level have the same size and count
  (both see the same grid), so the two maps always align; as in the reference, a shifted decoder
  block adds the encoder's (shifted) map too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from unetkit.models.attention_blocks import WindowAttention, init_transformer_
from unetkit.models.registry import register_model
from unetkit.models.swin_unet import SwinUnet, swin_unet_defaults

ATT_SWIN_PAPER = ("Aghdam et al., Attention Swin U-Net: Cross-Contextual Attention Mechanism for Skin Lesion "
                  "Segmentation, ISBI 2023, arXiv:2210.16898 (reference code NITR098/AttSwinUNet, Swin-T config)")


class SharedMapWindowAttention(WindowAttention):
    """Window attention with explicit softmax, so that its probabilities can be shared: with
    ``record`` it keeps the last ones (``last_map``); with a ``context`` (another such module) it
    adds that module's last probabilities to its own before weighting the values."""

    def __init__(self, dim: int, num_heads: int, window: Sequence[int], qkv_bias: bool = True) -> None:
        super().__init__(dim, num_heads, window, qkv_bias)
        self.record = False
        self.last_map: torch.Tensor | None = None
        self._context: tuple[SharedMapWindowAttention, ...] = ()  # a tuple: not registered as a submodule

    def attend_to(self, source: SharedMapWindowAttention) -> None:
        self._context = (source,)

    def forward(self, x: torch.Tensor, window: Sequence[int], mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v, bias = self.heads_and_bias(x, window, mask)
        probs = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias, dim=-1)
        if self.record:
            self.last_map = probs
        if self._context:
            encoder_map = self._context[0].last_map
            if encoder_map is None or encoder_map.shape != probs.shape:
                raise RuntimeError("cross-contextual attention: the encoder's attention map of this level is missing "
                                   f"or has another shape ({None if encoder_map is None else tuple(encoder_map.shape)} "
                                   f"vs {tuple(probs.shape)})")
            probs = probs + encoder_map
        return self.proj((probs @ v).transpose(1, 2).reshape(bw, n, c))


def _share_maps(old: WindowAttention) -> SharedMapWindowAttention:
    new = SharedMapWindowAttention(old.qkv.in_features, old.num_heads, old.window, old.qkv.bias is not None)
    new.apply(init_transformer_)
    return new


class AttentionSwinUnet(SwinUnet):
    """Swin-Unet whose decoder stages add the encoder's attention maps of their level (see the
    module docstring). Same arguments and parameters as :class:`SwinUnet`.

    Example:
        >>> AttentionSwinUnet(3, 1, depths=(2, 2, 6, 2))(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1, 224, 224])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n = len(self.encoder)
        for level in range(n - 1):  # the bottleneck stage has no decoder partner
            source_block = self.encoder[level].blocks[-1]
            source_block.attn = _share_maps(source_block.attn)
            source_block.attn.record = True
            for block in self.decoder[n - 2 - level].blocks:  # decoder stages run deepest first
                block.attn = _share_maps(block.attn)
                block.attn.attend_to(source_block.attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return super().forward(x)
        finally:  # the maps belong to this pass only (and hold its graph)
            for module in self.modules():
                if isinstance(module, SharedMapWindowAttention):
                    module.last_map = None


def _att_swin_defaults(spatial_dims: int) -> dict[str, Any]:
    return {**swin_unet_defaults(spatial_dims), "depths": [2, 2, 6, 2]}


@register_model(family="transformer", paper=ATT_SWIN_PAPER, spatial_dims=(2,), deep_supervision=False,
                defaults=_att_swin_defaults,
                tiny_kwargs={"embed_dim": 8, "depths": [2, 1, 1], "num_heads": [1, 2, 2], "window_size": 4,
                             "patch_size": 2},
                extra={"tags": ["transformer", "attention"], "divisible_by": 32, "pads_input": True,
                       "paper_params": None, "profile_patch_2d": [224, 224],
                       "paper_setup": "paper figure not reachable to us; snapshot of our count with the reference "
                                      "config (2D, 3 in, 1 class, 224x224, Swin-T depths 2,2,6,2): 41,380,068 = "
                                      "swin_unet at the same depths (the mechanism has no parameters)",
                       "kwargs_note": "plan keywords accepted and ignored"})
def attention_swin_unet(spatial_dims: int, in_channels: int, num_classes: int, deep_supervision: bool = False, *,
                        embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                        num_heads: Sequence[int] = (3, 6, 12, 24), window_size: int = 7, patch_size: int = 4,
                        mlp_ratio: float = 4.0, qkv_bias: bool = True, n_stages: Any = None,
                        features_per_stage: Any = None, kernel_sizes: Any = None,
                        strides: Any = None) -> AttentionSwinUnet:
    """Attention Swin U-Net (Att-SwinU-Net): Swin-Unet with the encoder's attention added in the decoder."""
    del spatial_dims, deep_supervision, n_stages, features_per_stage, kernel_sizes, strides
    return AttentionSwinUnet(in_channels, num_classes, embed_dim, tuple(depths), tuple(num_heads), window_size,
                             patch_size, mlp_ratio, qkv_bias)
