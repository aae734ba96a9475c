"""Stage 1: image formats, the raw dataset layout, dataset checks, import and fingerprint."""
