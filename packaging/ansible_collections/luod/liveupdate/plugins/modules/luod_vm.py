#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: luod_vm
short_description: Show a VM luod holds, or drop it
version_added: "0.1.0"
description:
  - With O(state=present), returns the VM luod holds under O(id), its state and its files, and
    fails when luod has no such VM (VMs are registered by their VMM, never by this module).
  - With O(state=absent), drops the VM (C(DELETE /v1/vms/{id})) so it is no longer preserved
    across an update; luod closes its LUO session and forgets it, and the module returns what
    luod released. luod refuses while the VM's VMM is connected, while an update runs, or when
    the VM came through an update with files not reclaimed, unless O(force=true).
    A luod without that endpoint answers 404 or 405, and the module fails saying this luod
    does not support it.
author:
  - luod contributors (!UNKNOWN)
extends_documentation_fragment:
  - luod.liveupdate.connection
options:
  id:
    description:
      - The VM's id, as its VMM registered it.
    type: str
    required: true
  state:
    description:
      - V(present) shows the VM; V(absent) drops it.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=absent), drop the VM even while its VMM is connected, an update runs, or
        files it came through an update with are not reclaimed (they are destroyed).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: With O(state=absent), reports whether the VM would be dropped.
  diff_mode:
    support: none
    description: No diff.
"""

EXAMPLES = r"""
- name: Show vm-17
  luod.liveupdate.luod_vm:
    id: vm-17
  register: vm

- name: Drop a VM whose VMM is gone for good
  luod.liveupdate.luod_vm:
    id: vm-17
    state: absent
"""

RETURN = r"""
released:
  description: With O(state=absent), what luod released (null when nothing was dropped).
  returned: always
  type: dict
  contains:
    session:
      description: The LUO session closed.
      type: str
    files:
      description: Files that were preserved in it.
      type: int
    bytes:
      description: Their bytes.
      type: int
    destroyed:
      description: Files that came through an update and were never reclaimed (force only).
      type: list
      elements: str
vm:
  description: The VM as luod holds it (null once dropped or when it does not exist).
  returned: always
  type: dict
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
      description: The files preserved for it.
      type: list
      elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luod_api import (
    CONNECTION_ARGS,
    LuodApiError,
    LuodUnreachable,
    client_from_params,
    problem_result,
)

ARGS = dict(
    id=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    force=dict(type="bool", default=False),
)


def current(client, vm_id):
    """The VM, or None when luod does not know it."""
    try:
        return client.vm(vm_id)
    except LuodApiError as exc:
        if exc.code == "unknown-vm":
            return None
        raise


def drop(module, client, vm_id):
    """What luod released, or None when the VM was gone meanwhile."""
    try:
        return client.drop_vm(vm_id, module.params["force"])["released"]
    except LuodApiError as exc:
        if exc.code == "unknown-vm":
            return None  # gone meanwhile
        if exc.status == 405 or exc.code in ("not-found", "method-not-allowed"):
            module.fail_json(
                msg="dropping a VM is not supported by this luod (DELETE /v1/vms/{id} "
                "answered %s %s): update luod, or drop it from its VMM (DROP)"
                % (exc.status, exc.code),
                **problem_result(exc)
            )
        raise


def main():
    module = AnsibleModule(argument_spec=dict(CONNECTION_ARGS, **ARGS), supports_check_mode=True)
    client = client_from_params(module.params)
    vm_id = module.params["id"]
    try:
        vm = current(client, vm_id)
        if module.params["state"] == "present":
            if vm is None:
                module.fail_json(msg="luod holds no VM %r" % vm_id, vm=None)
            module.exit_json(changed=False, vm=vm)
        changed, released = vm is not None, None
        if changed and not module.check_mode:
            released = drop(module, client, vm_id)
            changed = released is not None
    except LuodUnreachable as exc:
        module.fail_json(msg=str(exc))
    except LuodApiError as exc:
        module.fail_json(msg="luod refused: %s" % exc, **problem_result(exc))
    module.exit_json(changed=changed, vm=None, released=released)


if __name__ == "__main__":
    main()
