"""Doctest collection of ``src/``: the framework integrations import their framework, an optional extra."""

from __future__ import annotations

import importlib.util

collect_ignore = [path for path, module in (("src/greendiff/integrations/hf.py", "transformers"),
                                            ("src/greendiff/integrations/lightning.py", "lightning"))
                  if importlib.util.find_spec(module) is None]
