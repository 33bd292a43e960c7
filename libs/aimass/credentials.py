"""Secrets from settings: a value (``AIMASS_X``, a SecretStr) or a file holding it (``AIMASS_X_FILE``,
e.g. a mounted Kubernetes or Docker secret). Errors name the setting, never the value; nothing here logs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr


class SecretError(ValueError):
    pass


class Masked(str):
    """A str that shows as '**********' in repr() (so in dicts, tracebacks' locals, log lines that
    format a container); its value is intact for the libraries that need the plain text."""

    def __repr__(self) -> str:
        return "'**********'"


def is_set(value: SecretStr | None, file: Path | None) -> bool:
    return bool((value is not None and value.get_secret_value()) or file)


def resolve(value: SecretStr | None, file: Path | None, setting: str) -> str:
    """The secret of setting ``setting`` (its name, for messages): the value, else the file's content
    without surrounding whitespace; '' when neither is set. Both set is an error (which one wins would
    be a guess)."""
    plain = value.get_secret_value() if value is not None else ""
    if plain and file:
        raise SecretError(f"both {setting} and {setting}_file are set; set one")
    if file:
        try:
            plain = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{setting}_file {file} cannot be read ({exc.strerror or type(exc).__name__})") from None
        if not plain:
            raise SecretError(f"{setting}_file {file} is empty")
    return Masked(plain)
