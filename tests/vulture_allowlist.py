"""What vulture (``make lint``) reads besides luod: the names luod's own code does not use, and
who does. vulture matches by name, so each line only has to mention one. Anything used by
nobody, here or in luod, is dead code and goes. mypy checks this file too (``make typecheck``):
a name that no longer exists fails there, so the list cannot go stale.
"""

from types import TracebackType

import luod.kernel
from luod.core import bzimage, clock, registry
from luod.custody import sdnotify
from luod.daemon import settings
from luod.kernel import images, probes, sim, uapi
from luod.rest import adapter, metrics, models, problems, serve
from luod.rest import qualification_models as qm
from luod.vmm import codec

# Frameworks and tools call or read these.
luod.kernel.__getattr__  # Python calls a module's __getattr__ for a name it lacks (PEP 562)
metrics.Scrape.collect  # prometheus_client calls a collector's collect()
metrics  # FastAPI: the route GET /metrics (a function nested in luod.rest.app) has its name
models.Request.model_config  # pydantic: configuration, validators, serialised fields
models.PreflightRequest._exactly_one
models.Status.luo_supported
models.Vm.owner_uid
qm.StepTimings.canaries_seconds  # the qualification report's serialised fields
qm.StepTimings.kexec_seconds
qm.StepTimings.verify_seconds
qm.StepTimings.qemu_canary_seconds
qm.StepTimings.qemu_restore_seconds
qm.QualificationStep.from_release
qm.QualificationStep.to_release
models.Vm.disconnected_since
models.Transition.from_
models.Transition.to
models.Problem.errno_name
models.UpdateRecord.started_at
models.UpdateRecord.ended_at
models.UpdateStartRequest.deadline_seconds  # read by name, as JSON (luod.rest.port, records)
settings.ApiSettings.max_body_bytes  # crosses to the REST worker by name (luod.rest.serving)
models.History.next_cursor
models.Outcome.REFUSED  # enum members: values of a JSON field, compared as strings
models.Outcome.ABORTED
models.Outcome.COMPLETED_WITH_UNRECLAIMED
problems.ProblemResponse.media_type  # starlette: the response's content type
serve._Server.capture_signals  # uvicorn: an overridden hook (its exit flag is below)

# Public API that luod itself does not call: VMMs, and the tests' stand-ins.
bzimage.COMPRESSIONS  # the compressions luod reads (tests/unit/test_bzimage.py checks them)
uapi.IOC_WRITE  # the _IOC encoding's directions (unit tests encode with them)
uapi.IOC_READ
sdnotify.notify_barrier  # sd_notify's BARRIER=1 (the tests' fake fd store settles with it)

# Test hooks: how tests drive the fakes and look inside.
registry.Registry.kexec_staged
clock.FakeClock.advance
sim.SimKernel.fail_next_retrieve
sim.SimKernel.fail_next_reboot
codec.FrameReader.pending_fds


def instance_names(
    server: serve._Server,
    key: images.ImageKey,
    info: probes.KernelInfo,
    tb: TracebackType | None,
) -> None:
    """Names only an instance has (or an argument), mentioned through typed parameters."""
    server.should_exit  # uvicorn: the exit flag it reads
    key.mtime_ns  # part of the cache key: a frozen dataclass compared whole
    info.liveupdate_param  # part of what the probe reports (contract tests read it)
    tb  # luod.vmm.client's __exit__ names its unused arguments (the context-manager protocol)
    adapter._implements  # mypy checks there that DaemonFacade implements RestFacade


instance_names  # vulture and mypy read this file; nothing runs it
