"""API tokens: from an environment variable, or from a credentials file only its owner can read.

The file is TOML, one table per service::

    [electricitymaps]
    token = "..."

at ``$GREENDIFF_CREDENTIALS`` or ``<user config dir>/greendiff/credentials.toml``. A file that its
group or others can read is refused with the ``chmod`` to fix it. Tokens travel only in request
headers: never in URLs, cache keys, logs, the ledger, run directories or error messages.

A token is checked where it is read: surrounding whitespace is stripped (``$(cat token.txt)`` of a
CRLF file ends in ``\r``), and one that still holds a character an HTTP header value cannot carry
(control characters, line breaks, non-ASCII) is refused with a message naming where it came from,
never the token itself: http.client would otherwise put the value into its exception message.
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


def clean_token(value: object, where: str) -> str | None:
    """``value`` stripped of surrounding whitespace, ``None`` if nothing is left.

    Args:
        value: The token as read.
        where: Where it was read (an environment variable's name, a file and key); the only thing an
            error message says about the token.

    Raises:
        UserInputError: Not a string, or holding a character outside printable ASCII.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserInputError(f"the token in {where} must be a string, got a {type(value).__name__}")
    token = value.strip()
    if any(not " " <= ch <= "~" for ch in token):
        raise UserInputError(f"the token in {where} holds a character an HTTP header cannot carry (a control "
                             "character, line break or non-ASCII character); copy the token again (it is not shown here)")
    return token or None


def read_token(service: str, env_var: str, env: Mapping[str, str] = os.environ) -> str | None:
    """``env_var`` if set, else ``[service] token`` of the credentials file, else ``None``; checked by :func:`clean_token`.

    Raises:
        UserInputError: The file is readable by its group or others or is not valid TOML, or the token is unusable.
    """
    token = clean_token(env.get(env_var), f"${env_var}")
    if token:
        return token
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
    table = data.get(service)
    if table is not None and not isinstance(table, dict):
        raise UserInputError(f"credentials file {path}: [{service}] must be a table with a 'token' key")
    return clean_token((table or {}).get("token"), f"credentials file {path} ([{service}] token)")
