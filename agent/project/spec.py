"""Parse and validate `watchkeeper.toml`, with errors naming the file, the line and the key."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from agent.errors import WatchkeeperError, toml_syntax_message

SPEC_FILE = "watchkeeper.toml"
TOP_LEVEL_KEYS = ("models", "data", "share")
SHARE_KEYS = ("store",)
DATA_KEYS = ("keep", "keep_limit")
MODEL_KEYS = (
    "train",
    "deps",
    "outs",
    "metrics",
    "params",
    "params_file",
    "params_env",
    "remote",
    "on_stale",
    "resources",
    "keep_data",
    "keep_data_limit",
    "mlflow",
)
MLFLOW_CHOICES = ("capture", "off")  # capture: MLflow logs go to the run folder's mlflow.db
KEEP_DATA_CHOICES = ("always", "small", "never")
DEFAULT_KEEP_DATA_LIMIT = 1 << 30
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
PARAMS_FILE_SUFFIXES = (".json", ".yaml", ".yml", ".toml")
# `{name}` in a train command is a param placeholder; `{{` and `}}` are literal braces and
# `${NAME}` is left to the shell.
PLACEHOLDER = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
ON_STALE_CHOICES = ("notify", "retrain")
RESOURCE_KEYS = ("cpus", "gpus", "memory", "time", "partition")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A model name is part of run ids, run folders and file names: keep it well under NAME_MAX (255).
MAX_MODEL_NAME_LENGTH = 100
MEMORY_SIZE = re.compile(r"^[0-9]+[KMGT]?$")
SLURM_TIME = re.compile(r"^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$")

TEMPLATE = """\
# Watchkeeper project file: the models this repo trains and what each is built from.
# Every [models.NAME] table declares one model. `watchkeeper train NAME` runs it and records
# a model version; `watchkeeper status` says whether that version is stale and why.
#
# [models.churn]
# train = "python train.py --data data/train.csv --lr {lr}"  # run in a snapshot of the repo
# deps = ["train.py", "src/", "data/train.csv"]  # code deps (git) and data deps (git-ignored)
# outs = ["model.pkl"]            # files collected into the artifact store after training
# metrics = "metrics.json"        # flat JSON object of numbers, read after training
# params = { lr = 0.01, epochs = 5 }  # typed by these defaults; --param lr=0.1 overrides
#                                 # ({lr} is replaced by the param's value, shell-quoted)
# params_file = "params.yaml"     # written into the working copy (.json, .yaml or .toml)
# params_env = true               # the code reads $WK_PARAM_LR (always set) or $WK_PARAMS
# remote = "local"                # or the name of a remote from `watchkeeper remote add`
# on_stale = "notify"             # or "retrain"
# resources = { cpus = 2, gpus = 0, memory = "4G", time = "01:00:00" }  # used by Slurm
# keep_data = "small"             # keep data content for `reproduce`: always, small or never
# keep_data_limit = "1G"          # "small" keeps a data dep up to this size
# mlflow = "off"                  # leave MLflow logging alone (default "capture": recorded)
# (a top-level [data] table with keep and keep_limit sets these for every model)
# (a top-level [share] table's store, a remote's name or a folder, keeps pushed versions' blobs)
"""


@dataclass(frozen=True)
class ModelSpec:
    """One `[models.NAME]` table, validated."""

    name: str
    train: str
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    params_file: str | None = None
    params_env: bool = False
    remote: str = "local"
    on_stale: str = "notify"
    resources: dict[str, Any] = field(default_factory=dict)
    keep_data: str = "small"  # keep data content in the blob store: always, small or never
    keep_data_limit: int = DEFAULT_KEEP_DATA_LIMIT  # bytes per data dep, for "small"
    mlflow: str = "capture"  # "off": the run's MLflow tracking URI is left to the user


@dataclass(frozen=True)
class ProjectSpec:
    """A repo's `watchkeeper.toml`: where it is, its text (for line numbers) and its models."""

    root: Path
    path: Path
    text: str
    models: dict[str, ModelSpec]
    share_store: str | None = None  # [share] store: a remote's name or a folder for blobs

    def model(self, name: str) -> ModelSpec:
        """The named model, or an error listing the models that exist."""
        if name in self.models:
            return self.models[name]
        known = ", ".join(sorted(self.models)) or "none"
        hint = _did_you_mean(name, list(self.models))
        raise WatchkeeperError(
            f"{self.path}: no model named {name!r}; models declared there: {known}{hint or '.'}"
        )

    def where(self, model: str, key: str | None = None) -> str:
        """`file:line` of a model's key (or of its table), for error messages."""
        return _location(self.path, _line_of(self.text, ["models", model], key))


def load_project(root: Path) -> ProjectSpec:
    """Read and validate `root/watchkeeper.toml`.

    >>> load_project(Path("/nonexistent"))
    Traceback (most recent call last):
    ...
    agent.errors.WatchkeeperError: /nonexistent/watchkeeper.toml does not exist; ...
    """
    path = root / SPEC_FILE
    if not path.is_file():
        raise WatchkeeperError(
            f"{path} does not exist; run `watchkeeper init {root}` to create one."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise WatchkeeperError(f"{path}: cannot read it: {error}") from error
    return parse_project(root, path, text)


def repos_declaring(roots: Iterable[Path], model: str) -> list[Path]:
    """The repos among `roots` whose readable watchkeeper.toml declares `model`."""
    found = []
    for root in roots:
        try:
            if model in load_project(root).models:
                found.append(root)
        except WatchkeeperError:
            continue
    return found


def parse_project(root: Path, path: Path, text: str) -> ProjectSpec:
    """Validate the TOML text of a project file (see `load_project`)."""
    try:
        document = tomllib.loads(text)
    except RecursionError as error:
        raise WatchkeeperError(
            f"{path}: arrays or tables nested too deeply for a project file; "
            "declare models as [models.NAME] tables with flat values."
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise WatchkeeperError(toml_syntax_message(path, text, error)) from error
    checker = _Checker(path, text)
    for key in document:
        if key not in TOP_LEVEL_KEYS:
            checker.unknown_key([], key, TOP_LEVEL_KEYS)
    models_table = document.get("models", {})
    if not isinstance(models_table, dict):
        checker.fail([], "models", "must be a table of [models.NAME] tables")
    checker.data_defaults(document.get("data", {}))
    models = {name: checker.model(name, table) for name, table in models_table.items()}
    share_store = checker.share_store(document.get("share", {}))
    return ProjectSpec(root=root, path=path, text=text, models=models, share_store=share_store)


class _Checker:
    """Validates tables of one file, raising errors that point at the offending line."""

    keep_data = "small"
    keep_data_limit = DEFAULT_KEEP_DATA_LIMIT

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, table: list[str], key: str | None, problem: str) -> None:
        where = _location(self.path, _line_of(self.text, table, key))
        dotted = ".".join(table)
        name = f"[{dotted}] {key}" if table and key else (f"[{dotted}]" if table else str(key))
        end = "" if problem.endswith((".", "?")) else "."
        raise WatchkeeperError(f"{where}: {name} {problem}{end}")

    def unknown_key(self, table: list[str], key: str, known: tuple[str, ...]) -> None:
        hint = _did_you_mean(key, list(known))
        self.fail(table, key, f"is not a known key (known keys: {', '.join(known)}){hint}")

    def model(self, name: str, table: Any) -> ModelSpec:
        where = ["models", name]
        if not MODEL_NAME.match(name):
            self.fail(
                where,
                None,
                "is not a valid model name: use letters, digits, '_', '.' and '-' and start "
                "with a letter or digit",
            )
        if len(name) > MAX_MODEL_NAME_LENGTH:
            self.fail(
                where,
                None,
                f"is {len(name)} characters long; a model name may have at most "
                f"{MAX_MODEL_NAME_LENGTH}: choose a shorter one",
            )
        if not isinstance(table, dict):
            self.fail(["models"], name, "must be a table such as [models.NAME]")
        for key in table:
            if key not in MODEL_KEYS:
                self.unknown_key(where, key, MODEL_KEYS)
        train = table.get("train")
        if not isinstance(train, str) or not train.strip():
            self.fail(
                where,
                "train" if "train" in table else None,
                "needs a `train` command (a non-empty string)",
            )
        assert isinstance(train, str)
        params = self.params(where, table.get("params", {}))
        self.placeholders(where, train, params)
        return ModelSpec(
            name=name,
            train=train,
            deps=self.paths(where, "deps", table.get("deps", [])),
            outs=self.paths(where, "outs", table.get("outs", [])),
            metrics=self.optional_path(where, "metrics", table.get("metrics")),
            params=params,
            params_file=self.params_file(where, table.get("params_file")),
            params_env=self.boolean(where, "params_env", table.get("params_env", False)),
            remote=self.string(where, "remote", table.get("remote", "local")),
            on_stale=self.choice(where, "on_stale", table.get("on_stale", "notify")),
            resources=self.resources(where, table.get("resources", {})),
            keep_data=self.keep_choice(where, "keep_data", table.get("keep_data", self.keep_data)),
            keep_data_limit=self.size(
                where, "keep_data_limit", table.get("keep_data_limit", self.keep_data_limit)
            ),
            mlflow=self.mlflow_choice(where, table.get("mlflow", "capture")),
        )

    def data_defaults(self, table: Any) -> None:
        """Read the top-level [data] table: the keep defaults of every model."""
        if not isinstance(table, dict):
            self.fail([], "data", 'must be a table such as [data] with keep = "small"')
        for key in table:
            if key not in DATA_KEYS:
                self.unknown_key(["data"], key, DATA_KEYS)
        self.keep_data = self.keep_choice(["data"], "keep", table.get("keep", self.keep_data))
        self.keep_data_limit = self.size(
            ["data"], "keep_limit", table.get("keep_limit", self.keep_data_limit)
        )

    def share_store(self, table: Any) -> str | None:
        """Read the [share] table: where pushed versions' blobs go (a remote or a folder)."""
        if not isinstance(table, dict):
            self.fail([], "share", 'must be a table such as [share] with store = "team"')
        for key in table:
            if key not in SHARE_KEYS:
                self.unknown_key(["share"], key, SHARE_KEYS)
        return None if "store" not in table else self.string(["share"], "store", table["store"])

    def keep_choice(self, table: list[str], key: str, value: Any) -> str:
        text = self.string(table, key, value)
        if text not in KEEP_DATA_CHOICES:
            hint = _did_you_mean(text, list(KEEP_DATA_CHOICES))
            self.fail(
                table, key, f"is {text!r}; choose one of {', '.join(KEEP_DATA_CHOICES)}{hint}"
            )
        return text

    def mlflow_choice(self, table: list[str], value: Any) -> str:
        text = self.string(table, "mlflow", value)
        if text not in MLFLOW_CHOICES:
            hint = _did_you_mean(text, list(MLFLOW_CHOICES))
            self.fail(table, "mlflow", f"is {text!r}; choose one of capture, off{hint}")
        return text

    def size(self, table: list[str], key: str, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and MEMORY_SIZE.match(value.strip().upper()):
            text = value.strip().upper()
            unit = text[-1] if text[-1] in SIZE_UNITS else ""
            return int(text.removesuffix(unit)) * SIZE_UNITS[unit]
        self.fail(table, key, f'is {value!r}; give a size in bytes or such as "512M" or "2G"')
        raise AssertionError("unreachable")

    def string(self, table: list[str], key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            self.fail(table, key, f"must be a non-empty string, not {value!r}")
        return str(value)

    def boolean(self, table: list[str], key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.fail(table, key, f"must be true or false, not {value!r}")
        return bool(value)

    def placeholders(self, table: list[str], train: str, params: dict[str, Any]) -> None:
        for name in train_placeholders(train):
            if name not in params:
                hint = _did_you_mean(name, list(params))
                self.fail(
                    table,
                    "train",
                    f"has the placeholder {{{name}}} but declares no param {name!r}; add "
                    f"{name} to params (or write {{{{{name}}}}} for literal braces){hint}",
                )

    def params_file(self, table: list[str], value: Any) -> str | None:
        path = self.optional_path(table, "params_file", value)
        if path is not None and not path.endswith(PARAMS_FILE_SUFFIXES):
            self.fail(
                table,
                "params_file",
                f'is {path!r}; name a .json, .yaml or .toml file such as "params.yaml"',
            )
        if path == ".":
            self.fail(table, "params_file", 'must name a file, such as "params.json"')
        return path

    def choice(self, table: list[str], key: str, value: Any) -> str:
        text = self.string(table, key, value)
        if text not in ON_STALE_CHOICES:
            hint = _did_you_mean(text, list(ON_STALE_CHOICES))
            self.fail(table, key, f"is {text!r}; choose one of {', '.join(ON_STALE_CHOICES)}{hint}")
        return text

    def paths(self, table: list[str], key: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(table, key, "must be a list of paths relative to the repo root")
        return tuple(self.relative_path(table, key, item) for item in value)

    def optional_path(self, table: list[str], key: str, value: Any) -> str | None:
        return None if value is None else self.relative_path(table, key, value)

    def relative_path(self, table: list[str], key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(table, key, f"holds {value!r}; paths must be non-empty strings")
        normalized = normalize_repo_path(str(value))
        if normalized is None:
            self.fail(
                table,
                key,
                f"holds {value!r}, which leaves the repo; use a path relative to the repo root "
                "(link outside data into the repo if needed)",
            )
        assert normalized is not None
        return normalized

    def params(self, table: list[str], value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(table, "params", "must be a table such as { lr = 0.01, epochs = 5 }")
        for name, item in value.items():
            if not _is_json_value(item):
                self.fail(
                    table,
                    "params",
                    f"has {name} = {item!r}; params must be strings, numbers, booleans, "
                    "or lists and tables of those",
                )
        return dict(value)

    def resources(self, table: list[str], value: Any) -> dict[str, Any]:
        where = [*table, "resources"]
        if not isinstance(value, dict):
            self.fail(table, "resources", 'must be a table such as { cpus = 2, memory = "4G" }')
        for key, item in value.items():
            if key not in RESOURCE_KEYS:
                self.unknown_key(where, key, RESOURCE_KEYS)
            if key in ("cpus", "gpus"):
                minimum = 1 if key == "cpus" else 0
                if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
                    self.fail(where, key, f"must be a whole number >= {minimum}, not {item!r}")
            elif key == "memory":
                valid = (isinstance(item, int) and not isinstance(item, bool) and item > 0) or (
                    isinstance(item, str) and MEMORY_SIZE.match(item)
                )
                if not valid:
                    self.fail(where, key, f'must be megabytes or a size like "4G", not {item!r}')
            elif key == "time":
                valid = (isinstance(item, int) and not isinstance(item, bool) and item > 0) or (
                    isinstance(item, str) and SLURM_TIME.match(item)
                )
                if not valid:
                    self.fail(
                        where, key, f'must be minutes or a time like "01:30:00", not {item!r}'
                    )
            elif not isinstance(item, str) or not item:
                self.fail(where, key, f"must be a non-empty string, not {item!r}")
        return dict(value)


def train_placeholders(train: str) -> list[str]:
    """The param names a train command has as `{name}` placeholders, in order, each once.

    >>> train_placeholders("python t.py --lr {lr} --tag '{{x}}' --home ${HOME} --lr2 {lr}")
    ['lr']
    """
    names = [match.group(1) for match in PLACEHOLDER.finditer(train) if match.group(1)]
    return list(dict.fromkeys(names))


def normalize_repo_path(value: str) -> str | None:
    """A repo-relative posix path without `./`, `..` or a trailing slash; None if it escapes.

    >>> normalize_repo_path("./src/")
    'src'
    >>> normalize_repo_path("data/../../etc") is None
    True
    """
    if value.startswith("/") or "\\" in value:
        return None
    parts: list[str] = []
    for part in PurePosixPath(value).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts) if parts else "."


def _is_json_value(value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(_is_json_value(item) for item in value.values())
    return False


def _did_you_mean(word: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _location(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")


def _split_dotted(dotted: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', dotted)]


def _key_pattern(key: str) -> re.Pattern[str]:
    return re.compile(rf"""^\s*(["']?){re.escape(key)}\1\s*=""")


def _line_of(text: str, table: list[str], key: str | None) -> int | None:
    """The 1-based line where `key` is set in `table` (or the table's header when key is None).

    The text is scanned for headers and `key =` lines; dotted keys and inline tables fall back
    to the first line that sets the key anywhere, then to the table's header.
    """
    lines = text.splitlines()
    current: list[str] = []
    header_line: int | None = None
    fallback: int | None = None
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header and "=" not in line.split("#")[0].split("]")[0]:
            current = _split_dotted(header.group(1))
            if current == table and header_line is None:
                header_line = number
                if key is None:
                    return number
            if key is not None and fallback is None and current[: len(table) + 1] == [*table, key]:
                fallback = number
            continue
        if key is None:
            continue
        if current == table and _key_pattern(key).match(line):
            return number
        dotted_prefix = (
            ".".join(table[len(current) :]) if current == table[: len(current)] else None
        )
        if dotted_prefix and _key_pattern(f"{dotted_prefix}.{key}").match(line):
            return number
        if fallback is None and re.search(rf"""(^|[\s{{,.])["']?{re.escape(key)}["']?\s*=""", line):
            fallback = number
    if key is None and table:
        return _line_of(text, table[:-1], table[-1])
    return fallback or header_line


def with_declared_params(project: ProjectSpec, model: str, params: dict[str, Any]) -> str:
    """The project file's text with `model`'s declared params set to `params`.

    Comments, layout and the other keys are kept (tomlkit edits the document in place); the
    result is validated like any project file before it is returned.

    >>> text = '[models.m]\\ntrain = "t"  # how\\nparams = { lr = 0.5 }  # tuned\\n'
    >>> project = parse_project(Path("."), Path("watchkeeper.toml"), text)
    >>> print(with_declared_params(project, "m", {"lr": 0.1}), end="")
    [models.m]
    train = "t"  # how
    params = { lr = 0.1 }  # tuned
    """
    import tomlkit

    document = tomlkit.parse(project.text)
    table = document["models"][model]
    if "params" in table:
        declared = table["params"]
        for name in list(declared):
            if name not in params:
                del declared[name]
        for name, value in params.items():
            declared[name] = value
    else:
        inline = tomlkit.inline_table()
        inline.update(params)
        table["params"] = inline
    text = tomlkit.dumps(document)
    parse_project(project.root, project.path, text)
    return text
