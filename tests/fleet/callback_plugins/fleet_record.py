"""An Ansible callback for the fleet tests: every task result per host, and the play stats, as
JSON lines in $FLEET_RECORD (the stdout callback stays the default one, for people)."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "fleet_record"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, entry: dict[str, Any]) -> None:
        with open(os.environ["FLEET_RECORD"], "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, default=str) + "\n")

    def _result(self, result: Any, status: str) -> None:
        data = result._result
        self._write(
            {
                "host": result._host.get_name(),
                "task": result._task.get_name(),
                "status": status,
                "changed": bool(data.get("changed")),
                "msg": str(data.get("msg", "")),
                "result": {k: v for k, v in data.items() if not k.startswith("_")},
            }
        )

    def v2_runner_on_ok(self, result: Any) -> None:
        self._result(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._result(result, "failed")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._result(result, "unreachable")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._result(result, "skipped")

    def v2_playbook_on_stats(self, stats: Any) -> None:
        hosts = sorted(stats.processed)
        self._write({"stats": {h: stats.summarize(h) for h in hosts}})
