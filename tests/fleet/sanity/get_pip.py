"""A stand-in for pip's ``get-pip.py``, which ansible-test fetches from a host this project does
not reach: it puts pip into the empty virtual environment ansible-test made (from Python's own
``ensurepip``), then runs ``pip install`` with the arguments ansible-test gave, from the package
index as usual. ``--no-setuptools`` / ``--no-wheel`` are get-pip's own flags: nothing to do."""

from __future__ import annotations

import subprocess
import sys

OWN_FLAGS = ("--no-setuptools", "--no-wheel")


def main() -> int:
    # In a process of its own: ensurepip turns pip's configuration off in its environment
    # (PIP_CONFIG_FILE=/dev/null), and this host's configuration names its CA and mirrors.
    bootstrapped = subprocess.call([sys.executable, "-m", "ensurepip", "--upgrade"])
    if bootstrapped:
        return bootstrapped
    args = [arg for arg in sys.argv[1:] if arg not in OWN_FLAGS]
    return subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    sys.exit(main())
