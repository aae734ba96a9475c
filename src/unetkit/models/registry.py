"""The model registry: architectures referred to by name in plans.json, built by ``create_model``.

A variant is one small function decorated with :func:`register_model` in its family's module
(one module per family, listed in :data:`FAMILY_MODULES`); its metadata (family, supported
dimensions, deep supervision, paper, defaults, a tiny test configuration) sits in the decorator,
beside the code. The pattern follows timm's ``@register_model`` (Wightman, pytorch-image-models).

Family modules are imported on the first registry query, not when ``unetkit.models`` is imported,
and from an explicit list (no scanning of ``globals()``): adding a family is one line in
:data:`FAMILY_MODULES`, adding a variant is one decorated function.

Contract (docs/architecture.md, "Models"): ``create_model(name, spatial_dims, in_channels,
num_classes, deep_supervision=True, **kwargs)`` returns an ``nn.Module`` whose forward takes
``(B, in_channels, *patch)`` and returns logits ``(B, num_classes, *patch)``, or with deep
supervision a list of logits, full resolution first, then each coarser decoder level.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import torch
from torch import nn

from unetkit.models.kernel_workarounds import route_around_kernel_defects_

#: The modules that register models, one per family. Imported, in this order, on first use.
FAMILY_MODULES: tuple[str, ...] = (
    "unetkit.models.plain_unet",
    "unetkit.models.resenc_unet",
    "unetkit.models.unet_classic", "unetkit.models.unetpp", "unetkit.models.unet3plus", "unetkit.models.attention_unet",
    "unetkit.models.r2unet", "unetkit.models.resunetpp", "unetkit.models.multiresunet", "unetkit.models.u2net",
    "unetkit.models.stunet",
    "unetkit.models.mednext",
    "unetkit.models.neunet",
    "unetkit.models.lightweight",
    "unetkit.models.transunet", "unetkit.models.swin_unet", "unetkit.models.unetr", "unetkit.models.swin_unetr",
    "unetkit.models.focal_unet", "unetkit.models.umamba", "unetkit.models.xlstm_unet",
    "unetkit.models.vmamba", "unetkit.models.rwkv_unet",
    "unetkit.models.segresnet", "unetkit.models.vnet", "unetkit.models.highresnet",
    "unetkit.models.quicknat",
    "unetkit.models.transformer_3d", "unetkit.models.convnext_3d", "unetkit.models.segmamba",
    "unetkit.models.hybrid_cnn_transformer", "unetkit.models.pvt_decoders", "unetkit.models.efficient_transformer_unets",
    "unetkit.models.ubench_cnn_backbone", "unetkit.models.ubench_cnn_multiscale", "unetkit.models.ubench_cnn_lightweight",
    "unetkit.models.ubench_cnn_b_light", "unetkit.models.ubench_cnn_b_mlp",
    "unetkit.models.ubench_cnn_b_kan", "unetkit.models.ubench_cnn_b_attention", "unetkit.models.ubench_cnn_b_unetv2",
    "unetkit.models.efficientnet_unetpp", "unetkit.models.seed_cnn", "unetkit.models.seed_swin",
    "unetkit.models.vilunet", "unetkit.models.axial_mixed_transformers", "unetkit.models.window_transformer_unets",
    "unetkit.models.ubench_cnn_c_attention", "unetkit.models.ubench_cnn_c_erdunet", "unetkit.models.ubench_dual_branch",
    "unetkit.models.ubench_cnn_d", "unetkit.models.ubench_ghunet",
)

#: What a registered builder is called with: (spatial_dims, in_channels, num_classes,
#: deep_supervision, **kwargs) -> nn.Module.
Builder = Callable[..., nn.Module]
DefaultsFn = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class ModelInfo:
    """Everything the registry knows about one name.

    Attributes:
        name: the registry name written in plans (``architecture.name``).
        family: the family (one module per family), e.g. ``"nnunet"``.
        spatial_dims: the dimensions the model supports, e.g. ``(2, 3)``.
        deep_supervision: whether the model can return one output per decoder level.
        paper: citation of the paper (and figure or table) the model follows.
        description: first line of the builder's docstring.
        module: the module that registered it.
        tiny_kwargs: keyword arguments for a small, fast instance on patches such as 24x40x24 (3D)
            or 40x56 (2D); used by the generic tests and by smoke tests of other stages.
        extra: anything else a later stage may use (e.g. the planner rules of a preset).
    """

    name: str
    family: str
    spatial_dims: tuple[int, ...]
    deep_supervision: bool
    paper: str
    description: str
    module: str
    tiny_kwargs: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    defaults: DefaultsFn | None = field(default=None, repr=False, compare=False)

    def default_kwargs(self, spatial_dims: int) -> dict[str, Any]:
        """The full keyword arguments that ``create_model(name, spatial_dims, ...)`` uses when
        none are given: what the variant is "by name alone"."""
        self._check_dims(spatial_dims)
        return dict(self.defaults(spatial_dims)) if self.defaults is not None else {}

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (default kwargs given per supported dimension)."""
        return {
            "name": self.name, "family": self.family, "spatial_dims": list(self.spatial_dims),
            "deep_supervision": self.deep_supervision, "paper": self.paper,
            "description": self.description, "module": self.module,
            "default_kwargs": {str(d): self.default_kwargs(d) for d in self.spatial_dims},
            "tiny_kwargs": dict(self.tiny_kwargs), "extra": dict(self.extra),
        }

    def _check_dims(self, spatial_dims: int) -> None:
        if spatial_dims not in self.spatial_dims:
            raise ValueError(f"model {self.name!r} supports spatial_dims {list(self.spatial_dims)}, "
                             f"got {spatial_dims!r}")


class UnknownModelError(KeyError):
    """A name that is not registered; the message lists close matches and every known name."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


_REGISTRY: dict[str, tuple[ModelInfo, Builder]] = {}
_loaded = False


def register_model(*, family: str, paper: str, spatial_dims: Sequence[int] = (2, 3),
                   deep_supervision: bool = True, defaults: DefaultsFn | None = None,
                   tiny_kwargs: Mapping[str, Any] | None = None,
                   extra: Mapping[str, Any] | None = None,
                   name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under its function name (or ``name``).

    The builder is called as ``fn(spatial_dims, in_channels, num_classes, deep_supervision,
    **kwargs)`` and returns the model. Its keyword arguments are the plan's ``architecture.kwargs``.

    Example::

        @register_model(family="nnunet", paper="Isensee et al., Nat. Methods 2021",
                        tiny_kwargs={"n_stages": 3, "features_per_stage": [4, 8, 16]})
        def my_unet(spatial_dims, in_channels, num_classes, deep_supervision=True, *, n_stages=5):
            ...
    """

    def decorate(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is registered twice "
                             f"({_REGISTRY[key][0].module} and {fn.__module__})")
        doc = inspect.getdoc(fn) or ""
        info = ModelInfo(name=key, family=family, spatial_dims=tuple(spatial_dims),
                         deep_supervision=deep_supervision, paper=paper,
                         description=doc.splitlines()[0] if doc else "", module=fn.__module__,
                         tiny_kwargs=dict(tiny_kwargs or {}), extra=dict(extra or {}), defaults=defaults)
        _REGISTRY[key] = (info, fn)
        return fn

    return decorate


def _load_families() -> None:
    """Import every family module once, so that their decorators have run."""
    global _loaded
    if not _loaded:
        for module in FAMILY_MODULES:
            importlib.import_module(module)
        _loaded = True


def _lookup(name: str) -> tuple[ModelInfo, Builder]:
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_models(pattern: str | None = None, *, spatial_dims: int | None = None, family: str | None = None,
                deep_supervision: bool | None = None) -> list[str]:
    """Registered names, sorted, optionally filtered.

    Args:
        pattern: shell-style wildcard on the name (``"resenc*"``).
        spatial_dims: only models that support 2 or 3 spatial dimensions.
        family: only this family (see :func:`list_families`).
        deep_supervision: only models that do (True) or do not (False) support deep supervision.
    """
    _load_families()
    out = []
    for key, (info, _) in _REGISTRY.items():
        if pattern is not None and not fnmatch.fnmatchcase(key, pattern):
            continue
        if spatial_dims is not None and spatial_dims not in info.spatial_dims:
            continue
        if family is not None and info.family != family:
            continue
        if deep_supervision is not None and info.deep_supervision != deep_supervision:
            continue
        out.append(key)
    return sorted(out)


def list_families() -> list[str]:
    """The families of the registered models, sorted."""
    _load_families()
    return sorted({info.family for info, _ in _REGISTRY.values()})


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model; raises ``KeyError`` with close matches for unknown names."""
    return _lookup(name)[0]


def patch_keyword(name: str) -> str | None:
    """The builder keyword that takes the training patch, for models sized to a fixed input
    (a ViT's position table, a token grid): ``extra["patch_kwarg"]``, else None.

    The trainer passes the plan's patch under this keyword (:func:`model_patch`), and the
    checkpoint records it, so prediction rebuilds the same tables instead of interpolating them.
    """
    return model_info(name).extra.get("patch_kwarg")


def model_patch(name: str, patch: Sequence[int]) -> list[int]:
    """``patch`` as the model sees it: each side rounded up to ``extra["divisible_by"]`` (what a
    model that pads its input pads to, and what the trainer rounds the plan's patch up to)."""
    divisor = model_info(name).extra.get("divisible_by")
    if not isinstance(divisor, int) or divisor <= 1:
        return [int(p) for p in patch]
    return [-(-int(p) // divisor) * divisor for p in patch]


def create_model(name: str, spatial_dims: int, in_channels: int, num_classes: int,
                 deep_supervision: bool | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`list_models` (a plan's ``architecture.name``).
        spatial_dims: 2 or 3.
        in_channels: input channels (image modalities).
        num_classes: output channels (segmentation heads, background included).
        deep_supervision: return one output per decoder level, full resolution first. ``None``
            (the default) means "if the model has deep-supervision outputs"; ``True`` on a model
            without them is an error.
        **kwargs: the plan's ``architecture.kwargs``; ``None`` values mean "the default".

    Returns:
        The model, in training mode, initialized as its paper prescribes, with its strided 1x1
        convolutions computed as subsampling + 1x1 (same parameters; avoids a oneDNN defect).

    Raises:
        UnknownModelError: (a ``KeyError``) unknown name; the message lists close matches and all names.
        ValueError: unsupported dimension, deep supervision on a model without it, or bad sizes.
        TypeError: a keyword the model does not take (the message lists those it takes).

    Example:
        >>> model = create_model("plain_unet", 3, in_channels=1, num_classes=3)
        >>> outs = model(torch.zeros(1, 1, 32, 32, 32))   # list: 32^3, 16^3, 8^3, 4^3 logits
    """
    info, builder = _lookup(name)
    info._check_dims(spatial_dims)
    if deep_supervision is None:
        deep_supervision = info.deep_supervision
    if deep_supervision and not info.deep_supervision:
        raise ValueError(f"model {name!r} has no deep-supervision outputs; create it with deep_supervision=False")
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    in_channels, num_classes = int(in_channels), int(num_classes)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    accepted = _keyword_names(builder)
    if accepted is not None:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise TypeError(f"model {name!r} got unexpected keyword(s) {unknown}; "
                            f"it takes {sorted(accepted)}")
    model = builder(spatial_dims, in_channels, num_classes, deep_supervision, **kwargs)
    route_around_kernel_defects_(model)  # oneDNN's strided 1x1 backward corrupts memory (kernel_workarounds.py)
    return model


def _keyword_names(fn: Builder) -> set[str] | None:
    """Names of the model keywords a builder takes, or None if it takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())[4:]  # after the 4 contract arguments
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def conv_feature_map_size(model_or_topology: nn.Module | Mapping[str, Any], patch_size: Sequence[int],
                          num_classes: int | None = None, deep_supervision: bool = True) -> int:
    """Elements of the feature maps the convolutions of a network write for one sample of
    ``patch_size``: equal to dynamic-network-architectures' ``compute_conv_feature_map_size``
    (which nnU-Net's planner compares with its VRAM reference values).

    Args:
        model_or_topology: a model from :func:`create_model` that has a ``conv_feature_map_size``
            method, or a plan's architecture entry ``{"name": ..., "kwargs": {...}}``.
        patch_size: spatial size, without batch and channel axes.
        num_classes: segmentation heads; needed with an architecture entry.
        deep_supervision: with an architecture entry, whether all heads are evaluated (a model
            uses its own setting).

    An architecture entry is built on PyTorch's ``meta`` device: no memory, no weights.
    """
    patch = tuple(int(p) for p in patch_size)
    if isinstance(model_or_topology, nn.Module):
        fn = getattr(model_or_topology, "conv_feature_map_size", None)
        if fn is None:
            raise TypeError(f"{type(model_or_topology).__name__} has no conv_feature_map_size method")
        return int(fn(patch))
    entry = dict(model_or_topology)
    if "name" not in entry:
        raise ValueError("an architecture entry needs 'name' (and usually 'kwargs'), as in plans.json")
    if num_classes is None:
        raise ValueError("num_classes is needed to size the segmentation heads of an architecture entry")
    with torch.device("meta"):
        model = create_model(entry["name"], len(patch), 1, num_classes, deep_supervision,
                             **dict(entry.get("kwargs") or {}))
    return conv_feature_map_size(model, patch)
