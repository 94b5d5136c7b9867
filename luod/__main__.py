"""``python -m luod``: the ``luod`` command (luod.start)."""

from luod.start import entry

entry()
