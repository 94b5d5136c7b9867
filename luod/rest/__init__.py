"""luod's REST API (FastAPI) and its server (uvicorn), for operators and ``luoctl``.

Nothing is imported here on purpose: the daemon imports ``luod.rest`` lazily, once the VMM
socket serves, so fastapi and uvicorn never sit on the critical path after a kexec.
"""
