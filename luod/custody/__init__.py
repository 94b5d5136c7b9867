"""Custody: who else holds luod's session fds, so that a luod that dies loses nothing.

systemd's fd store (``fdstore``), the keeper process (``keeper``, ``keeper_client``,
``keeper_wire``), in-process copies for tests and the simulator (``memory``); ``choose`` picks
one. Processes, sockets and systemd: everything ``luod.core`` is not. This file imports nothing,
since the keeper (``python -m luod.custody.keeper``) must stay free of luod.kernel.
"""
