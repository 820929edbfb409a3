"""kdbench's built-in distillation methods, one per file, each registered through the ``kdbench.methods``
entry-point group exactly as a third-party plugin would be (see pyproject.toml)."""
