"""luod: the userspace agent for Linux Live Update Orchestrator on hypervisor hosts."""

__version__ = "0.1.0"
"""The one place luod's version is written: the package metadata (pyproject.toml), the Debian
changelog check (packaging/build-deb), OpenAPI, --version, HELLO and the metrics read it."""
