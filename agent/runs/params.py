"""A run's params: typed from the declared defaults, then turned into (command, env, files)."""

from __future__ import annotations

import difflib
import json
import math
import re
import shlex
import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit

from agent.errors import WatchkeeperError
from agent.project.spec import PLACEHOLDER, ModelSpec, train_placeholders

ENV_PREFIX = "WK_PARAM_"
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_INTEGER = re.compile(r"^[+-]?[0-9][0-9_]*$")


@dataclass(frozen=True)
class ParamDelivery:
    """How one param set reaches the train command.

    `command` is the train command with each `{name}` placeholder replaced by the shell-quoted
    value; `env` holds `WK_PARAM_<NAME>` for every param; `files` maps repo-relative paths to
    the bytes written into the run's working copy before the command starts (the params file).
    """

    command: str
    env: dict[str, str]
    files: dict[str, bytes]


def deliver_params(model: ModelSpec, params: dict[str, Any]) -> ParamDelivery:
    """The command, environment and files that give `params` to `model`'s train command.

    >>> from agent.project.spec import ModelSpec
    >>> model = ModelSpec("m", "python t.py --lr {lr} --tag {tag}", params={"lr": 0.1, "tag": ""})
    >>> delivery = deliver_params(model, {"lr": 0.5, "tag": "a b"})
    >>> delivery.command, delivery.env["WK_PARAM_LR"]
    ("python t.py --lr 0.5 --tag 'a b'", '0.5')
    """

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text in ("{{", "}}"):
            return text[0]
        return shlex.quote(param_text(params[match.group(1)]))

    files: dict[str, bytes] = {}
    if model.params_file:
        files[model.params_file] = render_params_file(model.params_file, params)
    return ParamDelivery(
        command=PLACEHOLDER.sub(replace, model.train),
        env={env_name(name): param_text(value) for name, value in params.items()},
        files=files,
    )


def env_name(param: str) -> str:
    """The environment variable that carries a param.

    >>> env_name("learning-rate")
    'WK_PARAM_LEARNING_RATE'
    """
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", param).upper()


def param_text(value: Any) -> str:
    """A param value as the command sees it: strings as they are, the rest as JSON.

    >>> [param_text(v) for v in ("a b", True, 3, 0.001, [1, 2])]
    ['a b', 'true', '3', '0.001', '[1, 2]']
    """
    return value if isinstance(value, str) else json.dumps(value)


def render_params_file(path: str, params: dict[str, Any]) -> bytes:
    """The params file's content, in the format its suffix names (JSON, YAML or TOML).

    >>> print(render_params_file("params.yaml", {"lr": 0.1, "name": "a: b"}).decode(), end="")
    lr: 0.1
    name: "a: b"
    """
    if path.endswith(".toml"):
        return tomlkit.dumps(params).encode()
    if path.endswith((".yaml", ".yml")):
        # JSON values are YAML flow values: one `key: value` line per param reads back exactly.
        lines = [
            f"{json.dumps(name)[1:-1] if _plain(name) else json.dumps(name)}: {json.dumps(value)}"
            for name, value in params.items()
        ]
        return ("\n".join(lines) + "\n").encode() if lines else b"{}\n"
    return (json.dumps(params, indent=2, sort_keys=True) + "\n").encode()


def _plain(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) is not None


def reaches_command(model: ModelSpec, param: str) -> bool:
    """True when the train command receives `param` in a declared way."""
    return bool(model.params_env or model.params_file or param in train_placeholders(model.train))


def parse_param_overrides(
    model: ModelSpec, pairs: list[str], where: str = "watchkeeper.toml"
) -> dict[str, Any]:
    """The declared params with `key=value` overrides, each typed like its declared default.

    A name that is not declared, that the command would not receive, or whose value does not
    parse as the declared type is refused; `where` (file:line of the params) goes in the error.

    >>> from agent.project.spec import ModelSpec
    >>> model = ModelSpec("m", "t --lr {lr} --n {n}", params={"lr": 0.1, "n": 5})
    >>> parse_param_overrides(model, ["lr=1e-3", "n=7"])
    {'lr': 0.001, 'n': 7}
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, equals, raw = pair.partition("=")
        name = name.strip()
        if not equals or not name:
            raise WatchkeeperError(f"--param {pair!r}: write it as key=value, e.g. --param lr=0.1")
        if name not in model.params:
            matches = difflib.get_close_matches(name, list(model.params), n=1)
            hint = f"; did you mean {matches[0]!r}?" if matches else ""
            declared = ", ".join(model.params) or "none"
            raise WatchkeeperError(
                f"--param {name}: model {model.name!r} declares no param {name!r} (declared: "
                f"{declared}); add {name} = <default> to its params in {where} first{hint}"
            )
        if not reaches_command(model, name):
            raise WatchkeeperError(
                f"--param {name}: the train command of {model.name!r} would not receive it, so "
                f"the version would record a value the code never saw. Declare how it gets "
                f"there in {where}: put {{{name}}} in `train`, set params_file = "
                f'"params.yaml" (read by the code), or set params_env = true if the code reads '
                f"${env_name(name)}"
            )
        overrides[name] = typed_value(name, raw, model.params[name], where)
    return {**model.params, **overrides}


def typed_value(name: str, raw: str, default: Any, where: str = "watchkeeper.toml") -> Any:
    """`raw` read as the type of the declared `default`, or an error naming both.

    >>> typed_value("epochs", "12", 5), typed_value("fast", "yes", False)
    (12, True)
    >>> typed_value("lr", "abc", 0.1)
    Traceback (most recent call last):
    ...
    agent.errors.WatchkeeperError: --param lr=abc: lr is declared as a float (0.1 in ...
    """
    kind = type_name(default)
    value = _parse_as(raw.strip(), default)
    if value is None:
        example = {"bool": "true", "int": "10", "float": "0.01", "list": "[1, 2]"}.get(kind)
        hint = f", such as {name}={example}" if example else ""
        raise WatchkeeperError(
            f"--param {name}={raw}: {name} is declared as {_article(kind)} {kind} "
            f"({json.dumps(default)} in {where}); {raw!r} is not {_article(kind)} {kind}; "
            f"give one{hint}"
        )
    return value


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    return {int: "int", float: "float", str: "string", list: "list", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


def _parse_as(raw: str, default: Any) -> Any:
    """`raw` as the type of `default`, or None when it is not one."""
    if isinstance(default, bool):
        word = raw.lower()
        return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None
    if isinstance(default, int):
        return int(raw.replace("_", "")) if _INTEGER.match(raw) else None
    if isinstance(default, float):
        try:
            number = float(raw)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if isinstance(default, str):
        quoted = _toml_value(raw) if raw[:1] in ("'", '"') else None
        return quoted if isinstance(quoted, str) else raw
    if isinstance(default, list):
        items = _toml_value(raw) if raw.startswith("[") else None
        if not isinstance(items, list):
            if raw.startswith("["):
                return None
            items = [item.strip() for item in raw.split(",")] if raw else []
        if not default:
            return items
        typed = [
            item if _same_kind(item, default[0]) else _parse_as(str(item), default[0])
            for item in items
        ]
        return None if any(item is None for item in typed) else typed
    if isinstance(default, dict):
        table = _toml_value(raw)
        if not isinstance(table, dict):
            try:
                table = json.loads(raw)
            except json.JSONDecodeError:
                return None
        return table if isinstance(table, dict) else None
    return None


def _same_kind(item: Any, example: Any) -> bool:
    if isinstance(example, bool) or isinstance(item, bool):
        return isinstance(item, bool) and isinstance(example, bool)
    if isinstance(example, float):
        return isinstance(item, int | float)
    return isinstance(item, type(example))


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return None
