"""greendiff: train diffusion models with a fraction of the energy and carbon, and prove it."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
