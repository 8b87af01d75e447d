"""The user's config.toml: identities, watched folders, remotes and schedule."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import tomlkit

from agent.errors import WatchkeeperError, toml_syntax_message
from agent.paths import WatchkeeperPaths

KNOWN_SECTIONS = ("identity", "watch", "schedule", "notifications", "remotes", "share")
SHARE_KEYS = ("mlflow",)
_TRACKING_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")


class ConfigError(WatchkeeperError, ValueError):
    """config.toml cannot be read; the message names the file, the line and what to do."""


class UserConfig:
    """The user config, kept as a tomlkit document so that saving preserves the user's comments.

    >>> config = UserConfig.load(Path("/tmp/does-not-exist/config.toml"))
    >>> config.section("identity").get("emails", [])
    []
    """

    def __init__(self, path: Path, document: tomlkit.TOMLDocument) -> None:
        self.path = path
        self.document = document

    @classmethod
    def load(cls, path: Path | None = None) -> UserConfig:
        path = path or WatchkeeperPaths.from_environment().config
        if not path.exists():
            return cls(path, tomlkit.document())
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{path}: cannot read it ({error}); fix or remove it.") from error
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(toml_syntax_message(path, text, error)) from error
        document = tomlkit.parse(text)
        for key in document:
            if key not in KNOWN_SECTIONS:
                raise ConfigError(
                    f"{path}:{_header_line(text, key)}: unknown section [{key}]; known sections "
                    f"are {', '.join(KNOWN_SECTIONS)}."
                )
        _check_share(path, text, document.get("share"))
        return cls(path, document)

    def section(self, name: str) -> dict[str, Any]:
        """Return a section as plain Python data (an empty dict when absent)."""
        value = self.document.get(name)
        return value.unwrap() if value is not None else {}

    def set(self, section: str, key: str, value: Any) -> None:
        """Set section.key, creating the section when needed."""
        if section not in self.document:
            self.document[section] = tomlkit.table()
        self.document[section][key] = value

    def remove(self, section: str, key: str) -> None:
        table = self.document.get(section)
        if table is not None and key in table:
            del table[key]

    def save(self) -> None:
        """Write atomically with mode 0600 (the file may name hosts and key paths)."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(tomlkit.dumps(self.document))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            raise ConfigError(
                f"{self.path}: cannot write it ({error.strerror}); make its folder writable."
            ) from error

    # Convenience accessors used by several commands.
    @property
    def identity_emails(self) -> list[str]:
        return [str(email) for email in self.section("identity").get("emails", [])]

    @property
    def watched_repos(self) -> list[str]:
        return [str(path) for path in self.section("watch").get("repos", [])]

    @property
    def watched_data(self) -> list[str]:
        return [str(path) for path in self.section("watch").get("data", [])]

    @property
    def share_mlflow(self) -> str | None:
        """The MLflow tracking URI the agent exports new versions to ([share] mlflow)."""
        uri = self.section("share").get("mlflow")
        return str(uri) if uri else None


def _check_share(path: Path, text: str, share: Any) -> None:
    """[share] holds only `mlflow`, a tracking URI such as "http://mlflow.example.com:5000"."""
    if share is None:
        return
    line = _header_line(text, "share")
    if not isinstance(share, dict):
        raise ConfigError(f"{path}:{line}: [share] must be a table, such as [share] mlflow = ...")
    for key, value in share.items():
        if key not in SHARE_KEYS:
            raise ConfigError(
                f"{path}:{_header_line(text, key)}: unknown key {key!r} in [share]; known keys "
                f"are {', '.join(SHARE_KEYS)}."
            )
        if not isinstance(value, str) or not _TRACKING_URI.match(value):
            raise ConfigError(
                f"{path}:{_header_line(text, key)}: [share] mlflow must be an MLflow tracking "
                f'URI such as "http://mlflow.example.com:5000", not {value!r}.'
            )


def _header_line(text: str, section: str) -> int:
    """The line where `section` first appears as a table header or a key (else 1)."""
    pattern = re.compile(rf"^\s*\[*\s*[\"']?{re.escape(section)}[\"']?\s*[.\]=]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 1
