"""kdbench: knowledge distillation for semantic segmentation under domain shift, benchmarked."""

__version__ = "0.1.0"
