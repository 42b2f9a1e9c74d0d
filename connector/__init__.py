"""ERP export -> Stock2Shop connector."""

__version__ = "0.1.0"
