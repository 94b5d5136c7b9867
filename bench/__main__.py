"""``python -m bench``: every benchmark, printed as tables side by side (not tests: no limits
are asserted; targets are printed next to the measures)."""

from __future__ import annotations

import sys

from bench import (
    abi_preflight,
    bare_overlap,
    baseline,
    blackout_budget,
    blackout_qemu,
    blackout_vm,
    flame,
    fleet,
    guest_memory,
    handover,
    memory,
    net_rebuild,
    orchestration,
    preserve_cost,
    qemu_handover,
    qualification,
    reclaim_cost,
    rest_load,
    scaling,
    startup,
    systemd_blackout,
    vm_targets,
)


def main() -> int:
    reports = (
        baseline,
        startup,
        handover,
        preserve_cost,
        vm_targets,  # preserve and exec -> first RECLAIM on the real kernel, one guest run
        blackout_budget,
        blackout_vm,  # the same six parts on the real kernel, across real kexecs
        blackout_qemu,  # and with real QEMU VMs under luod-qemu (1, 4, 10)
        reclaim_cost,  # part 6 and luod's CPU a VM in it, simulator
        memory,
        scaling,
        guest_memory,  # luod's own cost against the guest memory size, real kernel
        qemu_handover,
        orchestration,
        rest_load,
        systemd_blackout,
        bare_overlap,  # the same overlap without systemd: VMMs wait for luod's socket
        net_rebuild,
        fleet,
        qualification,  # before abi_preflight: its records feed the column qualified
        abi_preflight,
        flame,
    )
    for report in (module.report for module in reports):
        print(report(), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
