"""A reference VMM for demos and tests: "guest RAM" in memfds, handed to luod and verified."""
