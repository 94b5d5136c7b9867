"""``luoctl qualify``: qualify a live update along a chain of kernels (issue 14 §1), show the
report, export it as JUnit XML for CI systems.

- ``luoctl qualify start --chain A,B[,A]``: luod preserves canaries, kexecs into B, checks
  every canary byte and property there, and goes on along the chain;
- ``luoctl qualify show [ID] [--junit FILE]``: the report (the latest without ID);
- ``luoctl qualify list``: every qualification on record.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luod.cli import render
from luod.cli.args import absolute_path
from luod.cli.client import Api, LocalError
from luod.cli.output import EXIT_ERROR, EXIT_OK, EXIT_TIMEOUT

EXIT_FAILED = EXIT_ERROR
EXIT_RUNNING = EXIT_TIMEOUT  # `show` of a qualification that has not ended yet


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    qualify = commands.add_parser("qualify", help="qualify a live update from kernel A to B")
    verbs = qualify.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = verbs.add_parser("start", parents=[common], help="start a qualification (root)")
    start.add_argument(
        "--chain", required=True, type=_chain, metavar="A,B[,A]",
        help="kernel images: the running kernel's, then each next one",
    )  # fmt: skip
    start.add_argument(
        "--initrd", type=_keyed(absolute_path), action="append", default=[], metavar="IMAGE=INITRD",
        help="the initrd of a chain's kernel, named by its image (repeat for each kernel)",
    )  # fmt: skip
    start.add_argument(
        "--cmdline", type=_keyed(_text), action="append", default=[], metavar="IMAGE=CMDLINE",
        help="the command line of a chain's kernel (default: that of the kernel a step leaves)",
    )  # fmt: skip
    start.add_argument("--with-vms", action="store_true", help="run although VMs are preserved")
    start.add_argument(
        "--qemu-canary", action="store_true",
        help="a real QEMU guest (luod-qemu) crosses each kexec too, checked after each",
    )  # fmt: skip
    start.add_argument("--large-mib", type=int, help="size of the large canary (default 256)")
    start.add_argument("--many-files", type=int, help="files in one session (default 130)")
    start.add_argument("--sessions", type=int, help="one-file sessions (default 16)")
    start.set_defaults(run=qualify_start, check=lambda ns: _check_boot_options(start, ns))
    show = verbs.add_parser("show", parents=[common], help="a qualification's report")
    show.add_argument("id", nargs="?", help="its id (default: the latest)")
    show.add_argument("--junit", type=Path, metavar="FILE", help="also write it as JUnit XML")
    show.set_defaults(run=qualify_show)
    verbs.add_parser("list", parents=[common], help="every qualification").set_defaults(
        run=qualify_list
    )


def _chain(text: str) -> list[str]:
    kernels = [k for k in text.split(",") if k]
    if len(kernels) < 2:
        raise argparse.ArgumentTypeError("a chain names two kernels at least: A,B[,A]")
    return [absolute_path(k) for k in kernels]


def _text(text: str) -> str:
    if "\0" in text:
        raise argparse.ArgumentTypeError("a command line has no NUL byte")
    return text


def _keyed(value: Callable[[str], str]) -> Callable[[str], tuple[str, str]]:
    """``IMAGE=VALUE``: the image made absolute (as in --chain), the value checked."""

    def parse(text: str) -> tuple[str, str]:
        image, equals, rest = text.partition("=")
        if not equals or not image:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not IMAGE=VALUE (IMAGE: a --chain kernel)"
            )
        return absolute_path(image), value(rest)

    return parse


def _check_boot_options(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> None:
    """Each --initrd and --cmdline names a kernel of --chain, once (exit 2 otherwise)."""
    for option in ("initrd", "cmdline"):
        pairs: list[tuple[str, str]] = getattr(ns, option)
        for image, _ in pairs:
            if image not in ns.chain:
                parser.error(f"--{option} {image}=...: {image} is not in --chain")
        images = [image for image, _ in pairs]
        if len(set(images)) != len(images):
            parser.error(f"--{option} names a kernel twice")


def chain_body(ns: argparse.Namespace) -> list[Any]:
    """The chain as REST takes it: image paths, or objects where a kernel has boot options."""
    initrds, cmdlines = dict(ns.initrd), dict(ns.cmdline)
    body: list[Any] = []
    for image in ns.chain:
        if image not in initrds and image not in cmdlines:
            body.append(image)
            continue
        kernel = {"image": image, "initrd": initrds.get(image), "cmdline": cmdlines.get(image)}
        body.append({k: v for k, v in kernel.items() if v is not None})
    return body


# --- commands ---------------------------------------------------------------------------------
def qualify_start(api: Api, args: argparse.Namespace, out: Any) -> int:
    body: dict[str, Any] = {"chain": chain_body(args), "with_vms": args.with_vms}
    if args.qemu_canary:
        body["qemu_canary"] = True
    for option in ("large_mib", "many_files", "sessions"):
        if getattr(args, option) is not None:
            body[option] = getattr(args, option)
    out.show(api.post("/v1/qualifications", body), started)
    return EXIT_OK


def qualify_show(api: Api, args: argparse.Namespace, out: Any) -> int:
    if args.id:
        record = api.get(f"/v1/qualifications/{args.id}")
    else:
        found = api.get("/v1/qualifications")["qualifications"]
        if not found:
            raise LocalError("no qualification on record: luoctl qualify start --chain A,B")
        record = found[0]
    if args.junit:
        args.junit.write_bytes(junit(record))
    out.show(record, report)
    return {"passed": EXIT_OK, "running": EXIT_RUNNING}.get(record["outcome"], EXIT_FAILED)


def qualify_list(api: Api, args: argparse.Namespace, out: Any) -> int:
    out.show(api.get("/v1/qualifications"), listing)
    return EXIT_OK


# --- output -----------------------------------------------------------------------------------
def started(record: dict[str, Any]) -> list[str]:
    chain = " → ".join(k["release"] for k in record["chain"])
    return [
        f"qualification {record['id']} started: {chain}",
        "luod kexecs along the chain; then: luoctl qualify show " + record["id"],
    ]


def listing(doc: dict[str, Any]) -> list[str]:
    rows = [
        [
            r["id"],
            " → ".join(k["release"] for k in r["chain"]),
            r["outcome"],
            render.local_time(r["started_at"]),
            str(sum(len(s["checks"]) for s in r["steps"])),
        ]
        for r in doc["qualifications"]
    ]
    return render.table(rows, ["ID", "CHAIN", "OUTCOME", "STARTED", "CHECKS"])


def report(record: dict[str, Any]) -> list[str]:
    lines = [f"qualification {record['id']}: {record['outcome']}"]
    if record["reason"]:
        lines.append(f"  reason: {record['reason']}")
    for kernel in record["chain"]:
        handlers = ", ".join(f"{k} {v}" for k, v in sorted(kernel["handlers"].items()))
        lines.append(
            f"  kernel {kernel['release']} {kernel['version']}: {kernel['kho']}, "
            f"{kernel['luo']}, {handlers or 'no handlers'} ({kernel['image']})"
        )
        if kernel.get("initrd"):
            lines.append(f"    initrd {kernel['initrd']}")
        if kernel.get("cmdline") is not None:
            lines.append(f"    cmdline {kernel['cmdline']}")
    for step in record["steps"]:
        lines.extend(_step(step))
    return lines


def _step(step: dict[str, Any]) -> list[str]:
    timings = ", ".join(
        f"{k.removesuffix('_seconds')} {v}s" for k, v in step["timings"].items() if v is not None
    )
    checks = step["checks"]
    failed = [c for c in checks if c["result"] != "pass"]
    lines = [
        f"  step {step['index']}: {step['from_release']} → {step['to_release']} "
        f"(liveupdate number {step['liveupdate_number']}; {timings})",
        f"    {len(checks) - len(failed)}/{len(checks)} checks passed",
    ]
    lines += [f"    FAIL {c['name']}: expected {c['expected']}, got {c['actual']}" for c in failed]
    return lines


def junit(record: dict[str, Any]) -> bytes:
    """JUnit XML: one testsuite per chain step, one testcase per check."""
    suites = ET.Element("testsuites", name=f"luod qualification {record['id']}")
    for step in record["steps"]:
        checks = step["checks"]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"{step['from_release']} -> {step['to_release']}",
            tests=str(len(checks)),
            failures=str(sum(c["result"] != "pass" for c in checks)),
            time=str(step["timings"].get("verify_seconds") or 0),
        )
        properties = ET.SubElement(suite, "properties")
        for name, value in (
            ("liveupdate_number", step["liveupdate_number"]),
            *((f"{k}", v) for k, v in step["timings"].items() if v is not None),
        ):
            ET.SubElement(properties, "property", name=name, value=str(value))
        for check in checks:
            case = ET.SubElement(suite, "testcase", classname=suite.get("name", ""))
            case.set("name", check["name"])
            if check["result"] != "pass":
                failure = ET.SubElement(
                    case, "failure", message=f"expected {check['expected']}, got {check['actual']}"
                )
                failure.text = f"expected: {check['expected']}\nactual: {check['actual']}"
    if record["outcome"] == "failed" and not record["steps"]:
        suite = ET.SubElement(suites, "testsuite", name="qualification", tests="1", failures="1")
        case = ET.SubElement(suite, "testcase", classname="qualification", name="start")
        ET.SubElement(case, "failure", message=record["reason"])
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data
