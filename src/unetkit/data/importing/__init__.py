"""The steps of `unetkit import`, each testable alone.

- :mod:`.discover`: find the image and mask folders (class sub-folders by a glob, per-label mask
  sub-folders) and list their files; refuse a destination nested with a source.
- :mod:`.pairing`: pair images with their masks by name (prefix/suffix rules, numbered extra
  masks, or a glob), keep case names unique.
- :mod:`.masks`: read one mask, classify its values, turn it into labels; decide the mask rule
  for the dataset as a whole.
- :mod:`.convert`: convert every case (in worker processes), grey pictures stored as RGB.
- :mod:`.records`: what was skipped and why, the summary line and the exit status.

:func:`unetkit.data.importers.import_dataset` runs them in that order.
"""
