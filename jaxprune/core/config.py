"""What every config does alike: ``to_dict``, a strict ``from_dict``, YAML/JSON ``load``/``save``.

:class:`ConfigIO` is mixed into the frozen dataclasses that say what a run does (``Recipe``,
``StructuredRecipe``, ``RecoverConfig``, ``LoraConfig``, ``FedConfig``, ``FedTinyConfig``), so
each of them round-trips through a plain dict and a file the same way and refuses unknown keys
with the known ones listed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigIO")


def plain(value: Any) -> Any:
    """``value`` as YAML/JSON-able data: tuples become lists, configs their ``to_dict``."""
    if isinstance(value, ConfigIO):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping in a ``.yaml``/``.yml`` or ``.json`` file.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file does not parse (the message names the file, line and problem) or does
        not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})"
            ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {path} must hold a mapping of {what} fields")
    return data


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary sibling, so no reader sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class ConfigIO:
    """``to_dict``/``from_dict``/``load``/``save`` for a dataclass whose fields are plain data.

    ``NAME`` is the config's name in messages (``"recipe"``). A field holding another
    :class:`ConfigIO` accepts its dict (the dataclass's ``__post_init__`` converts it).
    """

    NAME: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """Every field as YAML/JSON-able data (tuples as lists, nested configs as dicts)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return sorted(f.name for f in dataclasses.fields(cls) if f.init)

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
        """The config with these fields; others keep their defaults.

        Raises:
          ValueError: ``d`` is not a mapping, has keys that are not fields (the message lists
            the known ones), or holds an invalid value.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a {cls.NAME} is a mapping of fields, got {type(d).__name__}")
        names = cls.field_names()
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.NAME} fields {unknown}; known: {names}")
        return cls(**d)

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Reads the config from a ``.yaml``/``.yml`` or ``.json`` file.

        Raises:
          FileNotFoundError: no such file.
          ValueError: the file does not parse or holds an invalid config (the message names
            the file).
        """
        data = read_mapping(path, cls.NAME)
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> None:
        """Writes :meth:`to_dict` as JSON (``.json``) or else YAML, atomically."""
        data = self.to_dict()
        if Path(path).suffix == ".json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            import yaml

            text = yaml.safe_dump(data, sort_keys=False)
        write_text_atomic(path, text)
