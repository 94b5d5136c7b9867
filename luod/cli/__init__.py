"""``luoctl``: the operator's command line for luod, over its REST API (luod.cli.main)."""
