"""luod.net.iproute: pyroute2's IPRoute without the package's __init__ (every netlink family
pyroute2 has), which runs only once someone asks the package for another name. Each case runs
in a fresh interpreter, so that no earlier import of pyroute2 hides what luod's import does."""

from __future__ import annotations

from pathlib import Path

from tests import fresh

WHOLE_PACKAGE_ONLY = ("pyroute2.conntrack", "pyroute2.ndb.main", "pyroute2.ipdb", "pyroute2.ipset")


def run(code: str, *path: Path) -> dict[str, object]:
    """``code`` in a fresh interpreter (``path`` first on sys.path); it prints one JSON line."""
    return fresh.last_json(fresh.run(code, *path))


def test_iproute_comes_without_the_rest_of_pyroute2_and_talks_rtnetlink() -> None:
    found = run(f"""
        import json, sys
        from luod.net.iproute import iproute_class, netlink_error
        IPRoute = iproute_class()
        loaded = [m for m in {WHOLE_PACKAGE_ONLY!r} if m in sys.modules]
        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        try:
            with IPRoute() as ipr:
                ipr.link("get", ifname="luodnolink0")
        except netlink_error() as exc:
            code = exc.code
        print(json.dumps({{"loaded": loaded, "module": IPRoute.__module__, "names": names,
                          "code": code}}))
    """)
    assert found["loaded"] == []
    assert found["module"] == "pyroute2.iproute.linux"
    assert "lo" in found["names"]  # type: ignore[operator]
    assert found["code"] == 19  # ENODEV, as luod.net.rtnl expects it


def test_the_package_completes_itself_when_asked_for_another_name() -> None:
    found = run(f"""
        import json, sys
        from luod.net.iproute import iproute_class
        lean = iproute_class()
        import pyroute2
        from pyroute2 import IPRoute, NDB
        loaded = [m for m in {WHOLE_PACKAGE_ONLY!r} if m in sys.modules]
        print(json.dumps({{"same": IPRoute is lean, "ndb": NDB.__name__, "loaded": loaded,
                          "all": hasattr(pyroute2, "IPDB")}}))
    """)
    assert found == {"same": True, "ndb": "NDB", "loaded": list(WHOLE_PACKAGE_ONLY), "all": True}


def test_a_pyroute2_imported_whole_before_is_used_as_it_is() -> None:
    found = run("""
        import json
        import pyroute2
        from luod.net.iproute import iproute_class
        print(json.dumps({"same": iproute_class() is pyroute2.IPRoute}))
    """)
    assert found == {"same": True}


def fake_pyroute2(root: Path, init: str, linux: str | None) -> Path:
    package = root / "pyroute2"
    (package / "iproute").mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    (package / "iproute" / "__init__.py").write_text("")
    if linux is not None:
        (package / "iproute" / "linux.py").write_text(linux)
    return root


def test_the_package_init_does_not_run_for_iproute(tmp_path: Path) -> None:
    fake = fake_pyroute2(tmp_path, "raise RuntimeError('the whole package ran')\n",
                         "IPRoute = 'from iproute.linux'\n")  # fmt: skip
    found = run(
        """
        import json
        from luod.net.iproute import iproute_class
        lean = iproute_class()
        import pyroute2
        try:
            pyroute2.NDB
            completed = "no error"
        except RuntimeError as exc:
            completed = str(exc)
        print(json.dumps({"lean": lean, "completed": completed}))
        """,
        fake,
    )
    assert found == {"lean": "from iproute.linux", "completed": "the whole package ran"}


def test_another_layout_imports_the_whole_package(tmp_path: Path) -> None:
    fake = fake_pyroute2(tmp_path, "IPRoute = 'from the package'\n", None)
    found = run(
        """
        import json
        from luod.net.iproute import iproute_class
        print(json.dumps({"class": iproute_class()}))
        """,
        fake,
    )
    assert found == {"class": "from the package"}


def test_luods_netlink_users_leave_the_rest_of_pyroute2_out() -> None:
    found = run(f"""
        import json, sys
        from luod.net import uplink
        from luod.net.plumbing import Plumbing
        from luod.net.rtnl import Reader
        with Plumbing() as net:
            missing = Reader(net.ipr).link("luodnolink0")
        uplink.default_uplink()
        loaded = [m for m in {WHOLE_PACKAGE_ONLY!r} if m in sys.modules]
        print(json.dumps({{"loaded": loaded, "missing": missing}}))
    """)
    assert found == {"loaded": [], "missing": None}
