"""Fuzz targets for luod's VMM socket and REST API (issue 13 §2): structure-aware inputs,
coverage-guided in process (atheris), and against a running ``luod --simulate``."""
