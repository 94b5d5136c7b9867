"""The host's network as it matters to a live update, through rtnetlink (pyroute2).

- ``uplink``: which link carries the default route, and when it is up again after a kexec.
- ``plumbing``: VM network devices across a kexec. ``Plumbing.record(decls)`` at prepare (a
  ``luod.core.nic.NetRecord`` per VM, for the manifest), ``Plumbing.rebuild(record)`` after the
  reboot (a ``luod.core.nic_report.RebuildReport``; never raises), ``Plumbing.preflight``
  (warnings naming the VM and the device). ``rtnl`` reads devices, ``rebuild`` runs the steps
  that luod.core.nic_plan chooses.
"""
