"""The host's network as it matters to a live update, through rtnetlink (pyroute2)."""
