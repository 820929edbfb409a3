"""Real datasets of the GKD benchmarks: catalog of on-disk layouts, label tables, file reading, ``data check``.

Sources: datasets.md §0-§15 (GKD ``task_learning/configs/_base_/datasets``, Rein, mmsegmentation 1.x converters).
"""
