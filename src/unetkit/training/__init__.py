"""Training: preprocessed cache -> batches -> network -> checkpoints.

The data side lives in four modules (import them directly; this package exports nothing):

* :mod:`unetkit.training.dataset`: ``CachedDataset``, reads ``preprocessed/CONFIG/``
  (memory-mapped arrays, properties, foreground locations).
* :mod:`unetkit.training.sampling`: ``PatchSampler``, patches with nnU-Net's foreground
  oversampling (the last third of each batch), padding of small cases, 2D slices of 3D caches.
* :mod:`unetkit.training.augmentation`: nnU-Net's augmentation set, batched in torch
  (``default_augmentation``, ``augment_batch``, ``crop_batch``), on CPU or GPU.
* :mod:`unetkit.training.loader`: ``BatchLoader`` (background workers with a watchdog,
  reproducible batch streams) and ``make_training_batch_fn`` (sampler + augmentation).
"""
