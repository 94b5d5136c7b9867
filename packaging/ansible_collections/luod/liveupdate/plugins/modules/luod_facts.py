#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: luod_facts
short_description: Gather facts about luod, the running kernel, its VMs and its updates
version_added: "0.1.0"
description:
  - Reads luod's REST API on the managed host and sets C(ansible_facts.luod).
  - The facts say which kernel the host runs (and its LUO ABI when luod reports one), the
    update phase, every VM luod holds and its state, the running update and the last one
    that ended, with its outcome and the blackout of each VM.
author:
  - luod contributors (!UNKNOWN)
extends_documentation_fragment:
  - luod.liveupdate.connection
options:
  kernel:
    description:
      - The next kernel image (a bzImage) on the managed host, to tell whether the host runs
        it already (C(on_target)); its release is read from the image's header.
    type: path
  target_release:
    description:
      - The release the host should run (C(uname -r)), instead of reading O(kernel)'s header.
    type: str
attributes:
  check_mode:
    support: full
    description: It only reads.
  diff_mode:
    support: none
    description: Nothing changes.
  facts:
    support: full
    description: Sets C(ansible_facts.luod).
"""

EXAMPLES = r"""
- name: Gather luod's facts
  luod.liveupdate.luod_facts:

- name: Show the kernel and the VMs
  ansible.builtin.debug:
    msg: "{{ ansible_facts.luod.kernel }}: {{ ansible_facts.luod.vm_states }}"

- name: Is this host on the next kernel already?
  luod.liveupdate.luod_facts:
    kernel: /boot/vmlinuz-7.3.4

- name: Read a remote luod over TCP
  luod.liveupdate.luod_facts:
    url: https://hv17.example.net:8470
    token_file: /etc/luod/fleet.token
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: dict
  contains:
    luod:
      description: luod and its updates on this host.
      returned: always
      type: dict
      contains:
        version:
          description: luod's version.
          type: str
          sample: 0.1.0
        kernel:
          description: Release of the running kernel (C(uname -r)).
          type: str
          sample: 7.3.4
        luo_supported:
          description: C(/dev/liveupdate) is present.
          type: bool
        luo_abi:
          description: The running kernel's LUO ABI, when luod reports it; null otherwise.
          type: str
          sample: luo-v5
        liveupdate_number:
          description: Live updates this machine went through.
          type: int
        phase:
          description: The update phase luod is in (C(idle) when none runs).
          type: str
          sample: idle
        vms:
          description: Every VM luod holds.
          type: list
          elements: dict
          contains:
            id:
              description: The VM's id.
              type: str
            state:
              description: registered, preserved, incoming, reclaimed or lost.
              type: str
            mode:
              description: handover or delegation.
              type: str
            files:
              description: How many files are preserved for it.
              type: int
            preserved_bytes:
              description: Their size.
              type: int
        vm_states:
          description: VM id to state.
          type: dict
          sample: {"vm-a": "preserved"}
        vms_not_back:
          description: VMs that are lost, or still waiting for their VMM after a kexec.
          type: list
          elements: str
        current_update:
          description: The update that is running (null when luod is idle).
          type: dict
        last_update:
          description:
            - The newest update that ended (null if none), with C(outcome), C(reason),
              C(reason_code), C(started_at), C(ended_at), C(blackout_seconds) per VM and C(blackout_parts),
              where each VM's blackout went (wait, kexec, boot, start, luod, reclaim, restore).
          type: dict
        longest_blackout_seconds:
          description: The longest blackout of a VM in the last update (null if none measured).
          type: float
        target_release:
          description: The release of O(kernel) (or O(target_release)); null without either.
          type: str
        on_target:
          description:
            - The host runs C(target_release), no update runs and every VM is back (none lost,
              none waiting for its VMM), so an update would change nothing.
          type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luod_api import (
    CONNECTION_ARGS,
    LuodApiError,
    LuodUnreachable,
    client_from_params,
    problem_result,
)
from ansible_collections.luod.liveupdate.plugins.module_utils.luod_state import (
    image_release,
    longest_blackout,
    summary,
    vm_states,
    vms_not_back,
)


def gather(client):
    status = client.status()
    vms = client.vms()
    state = client.update()
    last = client.history(limit=1)
    running = state["update"] if state["phase"] != "idle" else None
    last_update = summary(last[0]) if last else None
    return {
        "version": status["version"],
        "kernel": status["kernel"],
        "luo_supported": status["luo_supported"],
        "luo_abi": status.get("luo_abi"),
        "liveupdate_number": status["liveupdate_number"],
        "phase": state["phase"],
        "vms": [
            {
                "id": vm["id"],
                "state": vm["state"],
                "mode": vm["mode"],
                "files": len(vm["files"]),
                "preserved_bytes": sum(f["size"] for f in vm["files"]),
            }
            for vm in vms
        ],
        "vm_states": vm_states(vms),
        "vms_not_back": vms_not_back(vms),
        "current_update": summary(running),
        "last_update": last_update,
        "longest_blackout_seconds": longest_blackout(last_update),
    }


def target_of(module):
    if module.params["target_release"] or not module.params["kernel"]:
        return module.params["target_release"]
    try:
        return image_release(module.params["kernel"])
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (module.params["kernel"], exc))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGS, kernel=dict(type="path"), target_release=dict(type="str")
        ),
        supports_check_mode=True,
    )
    target = target_of(module)
    client = client_from_params(module.params)
    try:
        facts = gather(client)
    except LuodUnreachable as exc:
        module.fail_json(msg=str(exc))
    except LuodApiError as exc:
        module.fail_json(msg="luod refused: %s" % exc, **problem_result(exc))
    facts["target_release"] = target
    facts["on_target"] = bool(
        target
        and facts["kernel"] == target
        and facts["phase"] == "idle"
        and not facts["vms_not_back"]
    )
    module.exit_json(changed=False, ansible_facts={"luod": facts})


if __name__ == "__main__":
    main()
