"""bench.cgroup_migration's host side: the remount keeps the mount's other options (cgroup v2
clears every flag a remount does not name), and the report's ratio (the guest side runs in
make bench, on the real kernel: bench/vm_targets.py)."""

from __future__ import annotations

from bench import cgroup_migration


def test_the_remount_names_every_other_option() -> None:
    options = ["nsdelegate", "memory_recursiveprot"]
    on = cgroup_migration.remount_options(options, True)
    assert on == "nsdelegate,memory_recursiveprot,favordynmods"
    off = cgroup_migration.remount_options([*options, "favordynmods"], False)
    assert off == "nsdelegate,memory_recursiveprot"
    assert cgroup_migration.remount_options([], False) == ""


def test_the_report_gives_both_and_their_ratio() -> None:
    text = cgroup_migration.text({"plain": [0.008, 0.007, 0.009], "favordynmods": [8e-5] * 3})
    assert "plain            8 ms" in text and "favordynmods     80 µs" in text
    assert "favordynmods / plain: 0.010" in text
    skipped = cgroup_migration.text({"plain": [], "favordynmods": [8e-5]})
    assert "not measured: the guest booted with favordynmods" in skipped
