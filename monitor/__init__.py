"""LoRA / fine-tune monitoring daemon."""

__version__ = "0.1.0"
