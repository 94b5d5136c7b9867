#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: luod_update
short_description: Live-update a host's kernel with luod, keeping every VM's memory
version_added: "0.1.0"
description:
  - Starts a live update into O(kernel) through luod (preflight, prepare, freeze, kexec) and
    waits until the host runs the new kernel and every VM was reclaimed, or until luod aborted
    the update.
  - The kexec ends the connection to the host. The module's action plugin then waits for the
    host to answer again (as M(ansible.builtin.wait_for_connection) does) and runs the module
    once more, which reads the outcome from luod after the reboot.
  - Idempotent. A host that already runs the target release with every VM back reports
    C(changed=false). A play that died with the host's kexec (a C(local) connection) and is
    run again picks the update up where it stands.
  - On failure it returns luod's reason and the state of every VM. The host is left as luod's
    abort leaves it (every VM resumed, its memory still preserved, the loaded image unloaded).
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
      - Boot the next kernel with the running kernel's command line.
      - This is what happens when O(cmdline) is not given.
    type: bool
  target_release:
    description:
      - The release the host runs after the update (C(uname -r)).
      - By default the version string in O(kernel)'s bzImage header.
    type: str
  deadline_seconds:
    description:
      - Seconds per update phase (C(preparing), C(freezing), C(frozen), C(reclaiming),
        C(aborting)), replacing luod's configured deadlines for this update.
    type: dict
  timeout:
    description:
      - Seconds to wait for each half of the update, before and after the kexec (and for the
        host to come back in between).
    type: float
    default: 1800
  poll_interval:
    description:
      - Seconds between two looks at the update's progress.
    type: float
    default: 0.5
attributes:
  check_mode:
    support: full
    description: Runs luod's preflight checks and reports whether the host would be updated.
  diff_mode:
    support: none
    description: No diff.
notes:
  - Only root may start an update over the unix socket; over TCP the token stands for root.
seealso:
  - module: luod.liveupdate.luod_preflight
  - module: luod.liveupdate.luod_facts
"""

EXAMPLES = r"""
- name: Live-update into 7.3.4, the VMs' memory kept
  luod.liveupdate.luod_update:
    kernel: /boot/vmlinuz-7.3.4
    deadline_seconds:
      freezing: 10
  register: update

- name: The blackout each VM lived through
  ansible.builtin.debug:
    var: update.blackout_seconds
"""

RETURN = r"""
outcome:
  description: How the update ended (completed, aborted, refused, failed, ...).
  returned: always
  type: str
  sample: completed
reason:
  description: luod's reason, in words (empty when it completed).
  returned: always
  type: str
reason_code:
  description: The same as a stable word (deadline, vm-refused, preflight-failed, ...).
  returned: always
  type: str
kernel:
  description: The release the host runs now.
  returned: success
  type: str
  sample: 7.3.4
target_release:
  description: The release the update aims at.
  returned: always
  type: str
rebooting:
  description:
    - True when the module stopped at the kexec; the action plugin then waits for the host
      and runs the module again, so a task's result never has it true.
  returned: when the host is rebooting
  type: bool
update:
  description: The update record (id, kernel, outcome, reason, times, phases, blackout).
  returned: when there is one
  type: dict
blackout_seconds:
  description: Per VM, seconds from its freeze to its reclaim done after the kexec.
  returned: always
  type: dict
  sample: {"vm-a": 1.52}
vm_states:
  description: VM id to its state in luod after the update (or after the abort).
  returned: always
  type: dict
checks:
  description: The preflight checks, when they refused the update (or in check mode).
  returned: when the preflight ran
  type: list
  elements: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.luod.liveupdate.plugins.module_utils.luod_api import (
    CONNECTION_ARGS,
    LuodApiError,
    LuodUnreachable,
    client_from_params,
    problem_result,
)
from ansible_collections.luod.liveupdate.plugins.module_utils.luod_state import (
    BEFORE_KEXEC,
    checks_message,
    image_release,
    request_body,
    summary,
    vm_states,
    vms_not_back,
)

AFTER_KEXEC = ("completed", "completed-with-unreclaimed")
ARGS = dict(
    kernel=dict(type="path", required=True),
    initrd=dict(type="path"),
    cmdline=dict(type="str"),
    reuse_cmdline=dict(type="bool"),
    target_release=dict(type="str"),
    deadline_seconds=dict(type="dict"),
    timeout=dict(type="float", default=1800.0),
    poll_interval=dict(type="float", default=0.5),
)


class Update:
    """One run of the module: from what luod says, start, follow or finish the update."""

    def __init__(self, module, client, target):
        self.module = module
        self.client = client
        self.target = target
        self.deadline = time.time() + module.params["timeout"]
        self.poll = module.params["poll_interval"]

    def run(self):
        status = self.client.wait_reachable(self.module.params["timeout"])
        state = self.client.update()
        if status["kernel"] == self.target:
            return self.finish(state)
        if state["phase"] != "idle":
            return self.join(state)
        return self.start()

    # --- before the kexec --------------------------------------------------------------------
    def join(self, state):
        """An update is running: ours (a re-run of the play), or someone else's."""
        record = state["update"]
        mine = record is not None and record["request"]["kernel"] == self.module.params["kernel"]
        if state["phase"] in BEFORE_KEXEC + ("rebooting",) and mine:
            return self.follow(record["id"])
        self.fail("another update is running (phase %s)" % state["phase"], record)

    def start(self):
        body = request_body(self.module.params)
        if self.module.check_mode:
            return self.predict(body)
        body["deadline_seconds"] = self.module.params["deadline_seconds"] or {}
        try:
            record = self.client.start_update(body)
        except LuodApiError as exc:
            if exc.code != "preflight-failed":
                raise
            checks = exc.problem.get("checks") or []
            self.fail("preflight refuses: %s" % checks_message(checks), None, checks=checks,
                      outcome="refused", reason_code="preflight-failed")  # fmt: skip
        return self.follow(record["id"])

    def predict(self, body):
        result = self.client.preflight(body)
        if not result["ok"]:
            self.fail("preflight refuses: %s" % checks_message(result["checks"]), None,
                      checks=result["checks"], outcome="refused")  # fmt: skip
        self.module.exit_json(changed=True, checks=result["checks"], outcome="would-update",
                              reason="", reason_code="none", target_release=self.target,
                              blackout_seconds={}, vm_states=self.vm_states())  # fmt: skip

    def follow(self, update_id):
        """Until the kexec (luod says rebooting, or goes away once frozen) or the end."""
        last = None
        while time.time() < self.deadline:
            try:
                state = self.client.update()
            except LuodUnreachable:
                if last in ("frozen", "rebooting"):
                    return self.rebooting(update_id)
                time.sleep(self.poll)
                continue
            last, record = state["phase"], state["update"]
            ours = record is not None and record["id"] == update_id
            if last == "reclaiming" or (ours and record["outcome"] in AFTER_KEXEC):
                return self.finish(state, observed=True)  # the kexec came and went meanwhile
            if ours and record["outcome"] != "running":
                self.fail("update %s %s: %s" % (update_id, record["outcome"], record["reason"]),
                          record)  # fmt: skip
            if last == "rebooting":
                return self.rebooting(update_id)
            time.sleep(self.poll)
        self.fail("timed out in phase %s; luod's deadlines decide what follows" % last, None)

    def rebooting(self, update_id):
        self.module.exit_json(changed=True, rebooting=True, update={"id": update_id},
                              target_release=self.target, outcome="running", reason="",
                              reason_code="none", blackout_seconds={}, vm_states={},
                              msg="the host is kexecing into %s" % self.target)  # fmt: skip

    # --- on the target kernel ----------------------------------------------------------------
    def finish(self, state, observed=False):
        """Wait for the reclaim to end, then: every VM back, and how the update ended
        (``observed``: this run saw the update running, so it changed the host)."""
        while state["phase"] != "idle":
            if state["phase"] in BEFORE_KEXEC:
                self.fail("an update is running on the target kernel", state["update"])
            observed = True
            if time.time() >= self.deadline:
                self.fail("timed out while luod reclaims the VMs", state["update"])
            time.sleep(self.poll)
            try:
                state = self.client.update()
            except LuodUnreachable:
                continue
        record = state["update"] or next(iter(self.client.history(limit=1)), None)
        vms = self.client.vms()
        if observed and record and record["outcome"] != "completed":
            self.fail("update %s %s: %s" % (record["id"], record["outcome"], record["reason"]),
                      record, vms=vms)  # fmt: skip
        if vms_not_back(vms):
            self.fail("VMs not back: %s" % ", ".join(vms_not_back(vms)), record, vms=vms)
        self.module.exit_json(changed=observed, kernel=self.target, **self.about(record, vms))

    # --- results -----------------------------------------------------------------------------
    def about(self, record, vms):
        found = summary(record) or {}
        return dict(
            target_release=self.target,
            update=found or None,
            outcome=found.get("outcome", "completed"),
            reason=found.get("reason", ""),
            reason_code=found.get("reason_code") or "none",
            blackout_seconds=found.get("blackout_seconds", {}),
            vm_states=vm_states(vms),
        )

    def vm_states(self):
        return vm_states(self.client.vms())

    def fail(self, msg, record, vms=None, **extra):
        try:
            vms = vms if vms is not None else self.client.vms()
        except (LuodUnreachable, LuodApiError):
            vms = []
        found = self.about(record, vms)
        found.update(extra)
        self.module.fail_json(msg=msg, **found)


def target_of(module):
    target = module.params["target_release"]
    if target:
        return target
    try:
        target = image_release(module.params["kernel"])
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (module.params["kernel"], exc))
    if not target:
        module.fail_json(msg="%s names no release in its header: give target_release"
                         % module.params["kernel"])  # fmt: skip
    return target


def main():
    module = AnsibleModule(
        argument_spec=dict(CONNECTION_ARGS, **ARGS),
        mutually_exclusive=[("cmdline", "reuse_cmdline")],
        supports_check_mode=True,
    )
    if module.params["reuse_cmdline"] is False and module.params["cmdline"] is None:
        module.fail_json(msg="reuse_cmdline is false: give cmdline")
    client = client_from_params(module.params)
    try:
        Update(module, client, target_of(module)).run()
    except LuodUnreachable as exc:
        module.fail_json(msg=str(exc))
    except LuodApiError as exc:
        module.fail_json(msg="luod refused: %s" % exc, **problem_result(exc))


if __name__ == "__main__":
    main()
