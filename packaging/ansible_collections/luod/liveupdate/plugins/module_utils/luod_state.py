# -*- coding: utf-8 -*-
# Copyright: luod contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""What the modules conclude from luod's answers: pure functions over the REST documents.

- The target of an update is a kernel *release* (``uname -r`` after the kexec): given, or read
  from the bzImage header of the image (the boot protocol's ``kernel_version`` string).
- A host is done when it runs the target release, no update is running and every VM came back:
  none ``lost``, none still ``incoming`` (retrieved, not yet reclaimed by its VMM).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

VERSION_POINTER = 0x20E  # struct setup_header.kernel_version, relative to 0x200
MAGIC_OFFSET = 0x202
BEFORE_KEXEC = ("preparing", "prepared", "freezing", "frozen")
NOT_BACK = ("lost", "incoming")


def image_release(path):
    """The release an x86 bzImage boots (its header's version string up to the first space),
    or None when the image names none."""
    with open(path, "rb") as image:
        head = image.read(0x10000)
    if head[MAGIC_OFFSET : MAGIC_OFFSET + 4] != b"HdrS" or len(head) < VERSION_POINTER + 2:
        return None
    pointer = struct.unpack_from("<H", head, VERSION_POINTER)[0]
    if not pointer:
        return None
    with open(path, "rb") as image:
        image.seek(pointer + 0x200)
        text = image.read(256).split(b"\0")[0].split(b" ")[0]
    release = text.decode("ascii", "replace")
    return release or None


def vm_states(vms):
    return dict((vm["id"], vm["state"]) for vm in vms)


def vms_not_back(vms):
    """VMs that are lost, or still waiting for their VMM after a kexec."""
    return sorted(vm["id"] for vm in vms if vm["state"] in NOT_BACK)


def summary(record):
    """An update record as the modules return it (None stays None)."""
    if not record:
        return None
    return {
        "id": record["id"],
        "kernel": record["request"]["kernel"],
        "outcome": record["outcome"],
        "reason": record["reason"],
        "reason_code": record.get("reason_code"),
        "started_at": record.get("started_at"),
        "ended_at": record.get("ended_at"),
        "blackout_seconds": record.get("blackout_seconds", {}),
        "phases": [p["to"] for p in record.get("phases", [])],
    }


def longest_blackout(record):
    measured = [s for s in (record or {}).get("blackout_seconds", {}).values() if s is not None]
    return max(measured) if measured else None


def request_body(params):
    """The update (or preflight) request of the modules' kernel parameters."""
    body = {"kernel": params["kernel"]}
    if params.get("initrd"):
        body["initrd"] = params["initrd"]
    if params.get("cmdline") is not None:
        body["cmdline"] = params["cmdline"]
    else:
        body["reuse_cmdline"] = True
    return body


def failing_checks(checks):
    return [c for c in checks if c["status"] == "fail"]


def checks_message(checks):
    """Every refusing check in one line: ``id: message (hint); ...``."""
    parts = []
    for check in failing_checks(checks):
        hint = " (%s)" % check["hint"] if check.get("hint") else ""
        parts.append("%s: %s%s" % (check["id"], check["message"], hint))
    return "; ".join(parts)
