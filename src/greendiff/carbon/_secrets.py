"""API tokens: from an environment variable, or from a credentials file only its owner can read.

The file is TOML, one table per service::

    [electricitymaps]
    token = "..."

at ``$GREENDIFF_CREDENTIALS`` or ``<user config dir>/greendiff/credentials.toml``. A file that its
group or others can read is refused with the ``chmod`` to fix it. Tokens travel only in request
headers: never in URLs, cache keys, logs, the ledger, run directories or error messages.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from greendiff.errors import UserInputError

ENV_CREDENTIALS = "GREENDIFF_CREDENTIALS"


def credentials_path(env: Mapping[str, str] = os.environ) -> Path:
    return Path(env.get(ENV_CREDENTIALS) or Path(platformdirs.user_config_dir("greendiff")) / "credentials.toml")


def read_token(service: str, env_var: str, env: Mapping[str, str] = os.environ) -> str | None:
    """``env_var`` if set, else ``[service] token`` of the credentials file, else ``None``.

    Raises:
        UserInputError: The file is readable by its group or others, or is not valid TOML.
    """
    if env.get(env_var):
        return env[env_var]
    path = credentials_path(env)
    if not path.is_file():
        return None
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserInputError(f"credentials file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                             f"run: chmod 600 {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"credentials file {path} is not valid TOML ({type(exc).__name__})") from None
    token = (data.get(service) or {}).get("token")
    return str(token) if token else None
