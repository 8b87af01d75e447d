"""The error type the CLI shows to users: it names the file, line or field and the fix."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)")


class WatchkeeperError(Exception):
    """A problem the user can fix; the CLI prints the message and exits with status 2.

    >>> raise WatchkeeperError("watchkeeper.toml:3: unknown key 'trian'; did you mean 'train'?")
    Traceback (most recent call last):
    ...
    agent.errors.WatchkeeperError: watchkeeper.toml:3: unknown key 'trian'; did you mean 'train'?
    """

    exit_code = 2


def toml_syntax_message(path: Path, text: str, error: tomllib.TOMLDecodeError) -> str:
    """`FILE:LINE: invalid TOML, column C: PROBLEM. Fix the syntax there.` for a decode error.

    >>> try:
    ...     tomllib.loads("a = 1\\nb = [\\n")
    ... except tomllib.TOMLDecodeError as error:
    ...     print(toml_syntax_message(Path("config.toml"), "a = 1\\nb = [\\n", error))
    config.toml:2: invalid TOML, at the end of the file: Invalid value. Fix the syntax there.
    """
    match = _TOML_POSITION.search(str(error))
    problem = _TOML_POSITION.sub("", str(error))
    if match and match.group(1):
        line, where = int(match.group(1)), f"column {match.group(2)}"
    else:
        line, where = max(1, len(text.splitlines())), "at the end of the file"
    return f"{path}:{line}: invalid TOML, {where}: {problem}. Fix the syntax there."
