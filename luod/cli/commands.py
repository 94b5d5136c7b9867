"""luoctl's commands that ask once and print: each is a few REST calls and a rendering. (The
commands that follow an update live are in luod.cli.follow.)"""

from __future__ import annotations

import argparse
from typing import Any, Final

from luod.cli import render
from luod.cli.client import Api, vm_path
from luod.cli.output import EXIT_OK, EXIT_REFUSED, Output

HISTORY_PAGE: Final = 500


def status(api: Api, args: argparse.Namespace, out: Output) -> int:
    """The host at a glance: luod's status, its VMs by state and liveness, the update."""
    doc = api.get("/v1/status")
    if out.as_json:
        out.show(doc, render.status)
        return EXIT_OK
    glance = {"status": doc, "vms": api.get("/v1/vms")["vms"], "update": api.get("/v1/update")}
    out.show(glance, render.glance)
    return EXIT_OK


def preflight(api: Api, args: argparse.Namespace, out: Output) -> int:
    result = api.post("/v1/preflight", next_kernel(args))
    out.show(result, render.checks)
    return EXIT_OK if result["ok"] else EXIT_REFUSED


def vms(api: Api, args: argparse.Namespace, out: Output) -> int:
    listing = api.get("/v1/vms")
    if args.ids:  # for shell completion (luod.cli.parser.VM_IDS)
        print("\n".join(vm["id"] for vm in listing["vms"]), file=out.out, flush=True)
        return EXIT_OK
    out.show(listing, render.vms)
    return EXIT_OK


def vm(api: Api, args: argparse.Namespace, out: Output) -> int:
    out.show(api.get(vm_path(args.id)), render.vm)
    return EXIT_OK


def vm_drop(api: Api, args: argparse.Namespace, out: Output) -> int:
    path = vm_path(args.id) + ("?force=true" if args.force else "")
    out.show(api.delete(path), render.dropped)
    return EXIT_OK


def history(api: Api, args: argparse.Namespace, out: Output) -> int:
    """The last N updates (all without --last), oldest first: luod pages them newest first,
    ``next_cursor`` leads to older ones."""
    wanted: int | None = args.last
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while wanted is None or len(found) < wanted:
        limit = HISTORY_PAGE if wanted is None else min(HISTORY_PAGE, wanted - len(found))
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(f"/v1/history?{query}")
        found += page["history"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    out.show({"history": found[::-1]}, render.history)
    return EXIT_OK


def update_start(api: Api, args: argparse.Namespace, out: Output) -> int:
    body = {**next_kernel(args), "deadline_seconds": dict(args.deadline), "dry_run": args.dry_run}
    result = api.post("/v1/update", body)
    if args.dry_run:
        out.show(result, render.checks)
        return EXIT_OK if result["ok"] else EXIT_REFUSED
    out.show(result, render.started)
    return EXIT_OK


def update_show(api: Api, args: argparse.Namespace, out: Output) -> int:
    out.show(api.get("/v1/update"), lambda doc: render.update_state(doc, split=True))
    return EXIT_OK


def update_abort(api: Api, args: argparse.Namespace, out: Output) -> int:
    body = {"reason": args.reason} if args.reason else None
    out.show(api.post("/v1/update/abort", body)["update"], render.ended)
    return EXIT_OK


def next_kernel(args: argparse.Namespace) -> dict[str, Any]:
    """The next kernel's request body; its paths were made absolute here (luod.cli.args)."""
    body: dict[str, Any] = {"kernel": args.kernel}
    if args.initrd:
        body["initrd"] = args.initrd
    if args.reuse_cmdline:
        body["reuse_cmdline"] = True
    else:
        body["cmdline"] = args.cmdline
    if args.allow_unknown_abi:
        body["allow_unknown_abi"] = True
    return body
