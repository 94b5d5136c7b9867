# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""luod_update across the kexec: run the module; when it stops at the kexec (or the connection
dies with it), wait for the host to answer again, then run the module once more: on the new
kernel it waits for the reclaim and reads the outcome from luod."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()
MODULE = "luod.liveupdate.luod_update"
DEFAULT_TIMEOUT = 1800.0
RECONNECT_INTERVAL = 2.0


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        first = self._module(args, task_vars)
        if not (first.get("rebooting") or first.get("unreachable")):
            result.update(first)
            return result
        timeout = float(args.get("timeout") or DEFAULT_TIMEOUT)
        display.vvv("luod_update: the host kexecs; waiting up to %.0f s for it" % timeout)
        self._wait_for_host(timeout, task_vars)
        second = self._module(args, task_vars)
        if second.get("unreachable"):
            raise AnsibleConnectionFailure(second.get("msg", "the host went away again"))
        second["changed"] = True
        second["rebooted"] = True
        second.pop("rebooting", None)
        result.update(second)
        return result

    def _module(self, args, task_vars):
        try:
            return self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        except AnsibleConnectionFailure as exc:  # the kexec took the connection down mid-call
            return {"unreachable": True, "msg": str(exc)}

    def _wait_for_host(self, timeout, task_vars):
        """As ansible.builtin.wait_for_connection: until a ping gets a pong."""
        deadline = time.time() + timeout
        while True:
            try:
                self._connection.reset()
                ping = self._execute_module(
                    module_name="ansible.builtin.ping", module_args={}, task_vars=task_vars
                )
                if ping.get("ping") == "pong":
                    return
            except AnsibleConnectionFailure as exc:
                display.vvv("luod_update: not yet: %s" % exc)
            if time.time() >= deadline:
                raise AnsibleError("the host did not come back within %.0f s" % timeout)
            time.sleep(RECONNECT_INTERVAL)
