"""Suite definitions shipped with kdbench, as YAML files beside this module (read by ``kdbench.suite``)."""
