#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: luod_preflight
short_description: Run luod's preflight checks for a next kernel
version_added: "0.1.0"
description:
  - Asks luod to run every preflight check of a live update into O(kernel), without starting
    anything.
  - Fails when a check refuses; the message names every refusing check, its finding and its
    hint. Every check is returned either way.
author:
  - luod contributors (!UNKNOWN)
extends_documentation_fragment:
  - luod.liveupdate.connection
options:
  kernel:
    description:
      - Path of the next kernel image (a bzImage) on the managed host.
    type: path
    required: true
  initrd:
    description:
      - Path of its initrd on the managed host, if any.
    type: path
  cmdline:
    description:
      - The next kernel's command line (keep C(liveupdate=on)).
      - Mutually exclusive with O(reuse_cmdline).
    type: str
  reuse_cmdline:
    description:
      - Check the next kernel with the running kernel's command line.
      - This is what happens when O(cmdline) is not given.
    type: bool
attributes:
  check_mode:
    support: full
    description: It only reads; the checks run in check mode too.
  diff_mode:
    support: none
    description: Nothing changes.
"""

EXAMPLES = r"""
- name: Check the next kernel before a rollout
  luod.liveupdate.luod_preflight:
    kernel: /boot/vmlinuz-7.3.4

- name: Look at the checks without failing
  luod.liveupdate.luod_preflight:
    kernel: /boot/vmlinuz-7.3.4
    cmdline: console=ttyS0 kho=on liveupdate=on
  register: preflight
  ignore_errors: true
"""

RETURN = r"""
ok:
  description: No check failed.
  returned: success or when a check refused
  type: bool
checks:
  description: Every check luod ran, in order.
  returned: success or when a check refused
  type: list
  elements: dict
  contains:
    id:
      description: The check's stable name.
      type: str
      sample: kernel-image
    status:
      description: pass, warn or fail.
      type: str
    message:
      description: What it found.
      type: str
    hint:
      description: What to do about it.
      type: str
failed_checks:
  description: The ids of the checks that refused.
  returned: success or when a check refused
  type: list
  elements: str
warned_checks:
  description: The ids of the checks that warned.
  returned: success or when a check refused
  type: list
  elements: str
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
    checks_message,
    request_body,
)

KERNEL_ARGS = dict(
    kernel=dict(type="path", required=True),
    initrd=dict(type="path"),
    cmdline=dict(type="str"),
    reuse_cmdline=dict(type="bool"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(CONNECTION_ARGS, **KERNEL_ARGS),
        mutually_exclusive=[("cmdline", "reuse_cmdline")],
        supports_check_mode=True,
    )
    if module.params["reuse_cmdline"] is False and module.params["cmdline"] is None:
        module.fail_json(msg="reuse_cmdline is false: give cmdline")
    client = client_from_params(module.params)
    try:
        result = client.preflight(request_body(module.params))
    except LuodUnreachable as exc:
        module.fail_json(msg=str(exc))
    except LuodApiError as exc:
        module.fail_json(msg="luod refused the request: %s" % exc, **problem_result(exc))
    checks = result["checks"]
    found = dict(
        ok=result["ok"],
        checks=checks,
        failed_checks=[c["id"] for c in checks if c["status"] == "fail"],
        warned_checks=[c["id"] for c in checks if c["status"] == "warn"],
    )
    if not result["ok"]:
        module.fail_json(msg="preflight refuses: %s" % checks_message(checks), **found)
    module.exit_json(changed=False, **found)


if __name__ == "__main__":
    main()
