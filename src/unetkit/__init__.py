"""unetkit: self-configuring U-Net segmentation for 2D and 3D images.

The package is laid out along the data's way: ``data`` (formats, checks, fingerprint) ->
``planning`` -> ``preprocessing`` -> ``models`` -> ``training`` -> ``inference`` ->
``evaluation`` -> ``benchmark``, with a thin ``cli`` on top. Each stage reads the files the
previous stage wrote (JSON plans, ``.npy`` caches), not its internals.
"""

__version__ = "0.1.0"
