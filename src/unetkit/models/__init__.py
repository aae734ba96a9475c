"""Models: the registry of segmentation networks named in plans.json, and the networks.

``create_model(name, spatial_dims, in_channels, num_classes, deep_supervision=True, **kwargs)``
builds a registered network; ``list_models()`` lists names (filters: pattern, dimension, family,
deep supervision); ``model_info(name)`` gives a name's metadata; ``register_model`` is the
decorator that adds a variant. Family modules (``plain_unet``, ``resenc_unet``, ...) are imported
on first use. See docs/models.md.
"""

from unetkit.models.registry import (ModelInfo, UnknownModelError, conv_feature_map_size, count_parameters, create_model,
                                     list_families, list_models, model_info, model_patch, patch_keyword,
                                     register_model)

__all__ = ["ModelInfo", "UnknownModelError", "conv_feature_map_size", "count_parameters", "create_model", "list_families",
           "list_models", "model_info", "model_patch", "patch_keyword", "register_model"]
