"""What vulture (``make lint``) reads besides luod: the names luod's own code does not use, and
who does. vulture matches by name, so each line only has to mention one. Anything used by
nobody, here or in luod, is dead code and goes.
"""

import luod.kernel
from luod.core import bzimage, clock, registry
from luod.custody import sdnotify
from luod.daemon import daemon, facade, handler
from luod.kernel import images, probes, sim, uapi
from luod.qemu import canary
from luod.rest import app, metrics, models, problems, serve
from luod.rest import qualification_models as qm
from luod.vmm import client, codec

# Frameworks and tools call or read these.
luod.kernel.__getattr__  # Python calls a module's __getattr__ for a name it lacks (PEP 562)
facade._implements  # mypy checks there that DaemonFacade implements RestFacade
app.health  # FastAPI routes
app.metrics
metrics.Scrape.collect  # prometheus_client calls a collector's collect()
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
models.History.next_cursor
models.Outcome.REFUSED  # enum members: values of a JSON field, compared as strings
models.Outcome.ABORTED
models.Outcome.COMPLETED_WITH_UNRECLAIMED
problems.ProblemResponse.media_type  # starlette: the response's content type
serve._Server.capture_signals  # uvicorn: an overridden hook, and its exit flag
serve._Server.should_exit

# Public API that luod itself does not call: VMMs, and the tests' stand-ins.
images.ImageKey.mtime_ns  # part of the cache key: a frozen dataclass compared whole
bzimage.COMPRESSIONS  # the compressions luod reads (tests/unit/test_bzimage.py checks them)
probes.KernelInfo.liveupdate_param  # part of what the probe reports (contract tests read it)
uapi.IOC_WRITE  # the _IOC encoding's directions (unit tests encode with them)
uapi.IOC_READ
sdnotify.notify_barrier  # sd_notify's BARRIER=1 (the tests' fake fd store settles with it)

# Test hooks: how tests drive the fakes and look inside.
registry.Registry.kexec_staged
clock.FakeClock.advance
sim.SimKernel.fail_next_retrieve
sim.SimKernel.fail_next_reboot
daemon.Daemon.kernel_gone
handler.Verbs.kinds
codec.FrameReader.pending_fds

# The client's __exit__ names its unused arguments (the context-manager protocol).
client.Client.tb
canary.MAGIC_VALUE  # tests/unit/test_qemu_canary.py builds guest RAM with it
