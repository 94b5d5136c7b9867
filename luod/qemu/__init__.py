"""luod-qemu: run a QEMU VM under luod so that it survives a live update of the host kernel.

A client of luod's public VMM client library (``luod.vmm.client``) and of nothing else of luod,
like any other VMM; QEMU is used as it is, through its command line and QMP.

- ``cli``: the ``luod-qemu`` command (``run``, ``restore``) and its exit codes;
- ``supervisor``: one VM's life: luod's FREEZE and RESUME, QEMU's exit, signals;
- ``lifecycle``: booting a VM afresh, restoring it after the kexec;
- ``process``: QEMU's command line and the QMP steps (stop, cont, device state out and in);
- ``qmp``: the QMP client; ``files``: the preserved memfds and their formats;
- ``report``: the JSON log lines and the per-VM report; ``errors``: ``QemuAdapterError``.
"""
