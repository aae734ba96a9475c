"""Bodies of the generic model-zoo tests, run in an isolated worker (tests/isolated.py).

Each function builds a registered model at its ``tiny_kwargs`` and checks one property; it raises
AssertionError on failure. They live here, not in the test module, so the worker process can import
them without collecting tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from unetkit.models import create_model, model_info, model_patch, patch_keyword

# Patch sizes a planner can produce for strides [1, 2, 2, 2] (multiples of 8, odd after pooling).
PATCHES = {3: (24, 40, 24), 2: (40, 56)}
SMALL_PATCHES = {3: (8, 16, 8), 2: (16, 24)}


def tiny(name: str, dims: int, in_channels: int = 2, num_classes: int = 3, patch: Any = None,
         **kw: Any) -> torch.nn.Module:
    """The model at its ``tiny_kwargs``; a fixed-size model (``patch_kwarg``) is built for ``patch``
    (default ``PATCHES[dims]``), as the trainer builds it for the plan's patch."""
    kwargs = {**model_info(name).tiny_kwargs, **kw}
    patch_kwarg = patch_keyword(name)
    if patch_kwarg and kwargs.get(patch_kwarg) is None:
        kwargs[patch_kwarg] = model_patch(name, patch or PATCHES[dims])
    return create_model(name, dims, in_channels, num_classes, **kwargs)


def with_threads(threads: int, check: Callable[..., None], *args: Any) -> None:
    """``check(*args)`` with ``threads`` intra-op threads, then the previous count again.

    The generic tests run on tiny tensors, where two OpenMP threads on a busy 2-core machine spend
    most of their CPU time waking and joining each other: plain_unet's 2D overfit check took 0.59 CPU
    seconds with 2 threads and 0.08 with 1, MedNeXt-S's 1.05 and 0.11. Thread-dependent kernel
    defects are tested at the default count (tests/test_kernel_workarounds.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check(*args)
    finally:
        torch.set_num_threads(before)


def _as_list(outs: Any) -> list[torch.Tensor]:
    return outs if isinstance(outs, list) else [outs]


def forward_backward_shapes(name: str, dims: int, channels_last: bool = False) -> None:
    """Deep-supervision outputs (full resolution first, then coarser), finite values and gradients,
    and a single output once deep supervision is switched off. ``channels_last``: model and input
    in channels-last memory format, as ``unetkit train --channels-last`` runs them."""
    torch.manual_seed(0)
    model = tiny(name, dims)
    x = torch.randn(2, 2, *PATCHES[dims])
    if channels_last:
        layout = torch.channels_last if dims == 2 else torch.channels_last_3d
        model, x = model.to(memory_format=layout), x.contiguous(memory_format=layout)
    outs = model(x)
    if model_info(name).deep_supervision:
        assert isinstance(outs, list) and len(outs) >= 2
        assert outs[0].shape == (2, 3, *PATCHES[dims])  # full resolution first
        for finer, coarser in zip(outs, outs[1:]):  # then each coarser decoder level
            assert coarser.shape[:2] == (2, 3)
            assert all(c <= f for c, f in zip(coarser.shape[2:], finer.shape[2:]))
            assert coarser.shape[2:] != finer.shape[2:]
    outs = _as_list(outs)
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    model.deep_supervision = False  # switchable after training (inference)
    with torch.no_grad():
        single = model(x)
    assert isinstance(single, torch.Tensor) and single.shape == (2, 3, *PATCHES[dims])


def eval_without_deep_supervision(name: str, dims: int) -> None:
    model = tiny(name, dims, deep_supervision=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, *PATCHES[dims]))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, *PATCHES[dims])


def overfits_tiny_batch(name: str, dims: int) -> None:
    """Six Adam steps on a learnable voxel-wise rule lower the loss by at least 20 %. A model that
    predicts at 1/s of the input and upsamples (``extra["output_stride"]`` s: PVT decoders and U-Net v2
    at 1/4, RWKV-UNet at 1/2) gets an input that is constant over s x s blocks (the block means of the
    same noise, rescaled to unit variance): a per-voxel rule on white noise is not learnable at its
    resolution, a per-block rule is."""
    torch.manual_seed(0)
    model = tiny(name, dims, in_channels=1, num_classes=2, patch=SMALL_PATCHES[dims])
    x = torch.randn(2, 1, *SMALL_PATCHES[dims])
    stride = int(model_info(name).extra.get("output_stride", 1))
    if stride > 1:
        pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
        x = F.interpolate(pool(x, stride), scale_factor=stride, mode="nearest") * stride ** (dims / 2)
    target = (x[:, 0] > 0.3).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn() -> torch.Tensor:
        return F.cross_entropy(_as_list(model(x))[0], target)

    first = loss_fn().item()
    for _ in range(6):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    last = loss_fn().item()
    assert last < 0.8 * first, (first, last)


def state_dict_round_trip_safetensors(name: str, dims: int, folder: str) -> None:
    """Weights saved with safetensors load strictly into a fresh instance: identical outputs."""
    torch.manual_seed(0)
    a = tiny(name, dims).eval()
    path = f"{folder}/model.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, path)
    torch.manual_seed(1)
    b = tiny(name, dims).eval()
    b.load_state_dict(load_file(path), strict=True)
    x = torch.randn(1, 2, *PATCHES[dims])
    with torch.no_grad():
        oa, ob = a(x), b(x)
    for u, v in zip(_as_list(oa), _as_list(ob)):
        assert torch.equal(u, v)
