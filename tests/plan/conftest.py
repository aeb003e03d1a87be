from __future__ import annotations

from tests.train.conftest import tiny_config, tiny_data, tracker  # noqa: F401  (the trainer's tiny fixtures)
