"""The luod daemon: wiring of kernel backend, custody, registry, VMM socket and signals."""
