"""luod: the userspace agent for Linux Live Update Orchestrator on hypervisor hosts."""

__version__ = "0.1.0"
