"""Translate a DVC pipeline (dvc.yaml, params.yaml) into watchkeeper.toml models; read DVC md5s."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import WatchkeeperError
from agent.project.spec import (
    MAX_MODEL_NAME_LENGTH,
    MODEL_NAME,
    SPEC_FILE,
    normalize_repo_path,
    parse_project,
)

DVC_FILE = "dvc.yaml"
DVC_LOCK = "dvc.lock"
DEFAULT_PARAMS_FILE = "params.yaml"
# `${name}` or `${item.field}` in dvc.yaml; `\${` is DVC's escape for a literal `${`.
INTERPOLATION = re.compile(r"(?<!\\)\$\{\s*([A-Za-z0-9_.\[\]-]+)\s*\}")
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MD5_CHUNK = 1 << 20


@dataclass
class DvcConversion:
    """The models translated from dvc.yaml, and one line per thing that was not translated."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # model -> "dvc.yaml:LINE stage NAME"
    notes: list[str] = field(default_factory=list)


def _yaml() -> Any:
    import yaml

    return yaml


def _load_yaml(path: Path) -> tuple[Any, Any]:
    """(document, composed node tree) of a YAML file; a syntax error names the file and line."""
    yaml = _yaml()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise WatchkeeperError(f"{path}: cannot read it: {error}") from error
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise WatchkeeperError(
            f"{where}: invalid YAML: {problem}; fix the file (DVC cannot read it either)."
        ) from error


def _key_lines(node: Any) -> dict[str, int]:
    """The 1-based line of each key of a YAML mapping node."""
    if node is None or not hasattr(node, "value") or not isinstance(node.value, list):
        return {}
    return {
        str(key.value): key.start_mark.line + 1
        for key, _ in (pair for pair in node.value if isinstance(pair, tuple))
    }


def _child(node: Any, key: str) -> Any:
    if node is None or not isinstance(getattr(node, "value", None), list):
        return None
    for pair in node.value:
        if isinstance(pair, tuple) and str(pair[0].value) == key:
            return pair[1]
    return None


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    """`a.b[0]` in context; KeyError when any part is missing."""
    value: Any = context
    for part in re.findall(r"[^.\[\]]+", dotted):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(dotted)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


class _Converter:
    """Expands and translates the stages of one dvc.yaml."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / DVC_FILE
        self.result = DvcConversion()
        self.field_lines: dict[str, int] = {}

    def note(self, line: int | None, stage: str, text: str, key: str | None = None) -> None:
        """One line about `stage`, at the line of its field `key` when known."""
        line = self.field_lines.get(key, line) if key else line
        where = f"{DVC_FILE}:{line}" if line else DVC_FILE
        self.result.notes.append(f"{where}: stage {stage}: {text}")

    def convert(self) -> DvcConversion:
        if not self.path.is_file():
            raise WatchkeeperError(
                f"{self.path} does not exist; run `watchkeeper init --from-dvc` in a repo with a "
                "DVC pipeline, or `watchkeeper init` for a blank watchkeeper.toml."
            )
        document, tree = _load_yaml(self.path)
        if not isinstance(document, dict) or not isinstance(document.get("stages"), dict):
            raise WatchkeeperError(
                f"{self.path}: has no `stages:` table; declare the pipeline's stages there."
            )
        self.params = self._params()
        self.variables = dict(self.params)
        self._vars(document.get("vars"))
        stages_node = _child(tree, "stages")
        lines = _key_lines(stages_node)
        for name, body in document["stages"].items():
            self._stage(str(name), body, lines.get(str(name)), _child(stages_node, str(name)))
        return self.result

    def _params(self) -> dict[str, Any]:
        path = self.root / DEFAULT_PARAMS_FILE
        if not path.is_file():
            return {}
        params, _ = _load_yaml(path)
        if params is None:
            return {}
        if not isinstance(params, dict):
            raise WatchkeeperError(f"{path}: must hold a mapping of params (name: value).")
        return params

    def _vars(self, entries: Any) -> None:
        for entry in entries or []:
            if isinstance(entry, dict):
                self.variables.update(entry)
            elif isinstance(entry, str) and (self.root / entry.split(":")[0]).is_file():
                loaded, _ = _load_yaml(self.root / entry.split(":")[0])
                if isinstance(loaded, dict):
                    self.variables.update(loaded)

    def _stage(self, name: str, body: Any, line: int | None, node: Any) -> None:
        if not isinstance(body, dict):
            raise WatchkeeperError(f"{self.path}:{line}: stage {name} must be a mapping with cmd.")
        field_lines = _key_lines(node)
        if "foreach" in body or "matrix" in body:
            for suffix, local in self._expansions(name, body, line, field_lines):
                self.field_lines = _key_lines(_child(node, "do")) or field_lines
                self._translate(f"{name}@{suffix}", body.get("do", body), local, line)
            return
        self.field_lines = field_lines
        self._translate(name, body, {}, line)

    def _expansions(
        self, name: str, body: dict[str, Any], line: int | None, field_lines: dict[str, int]
    ) -> list[tuple[str, dict[str, Any]]]:
        if "foreach" in body:
            where = field_lines.get("foreach", line)
            items = self._resolve_collection(name, "foreach", body["foreach"], where)
            if isinstance(items, dict):
                return [(str(key), {"key": key, "item": value}) for key, value in items.items()]
            if isinstance(items, list):
                scalar = all(not isinstance(item, dict | list) for item in items)
                return [
                    (_text(item) if scalar else str(index), {"item": item})
                    for index, item in enumerate(items)
                ]
            raise WatchkeeperError(
                f"{self.path}:{where}: stage {name}: foreach must be a list or a mapping, "
                f"not {items!r}."
            )
        where = field_lines.get("matrix", line)
        matrix = body["matrix"]
        if not isinstance(matrix, dict):
            raise WatchkeeperError(
                f"{self.path}:{where}: stage {name}: matrix must map names to lists of values."
            )
        axes = {
            key: self._resolve_collection(name, f"matrix.{key}", values, where)
            for key, values in matrix.items()
        }
        expansions = []
        for combination in itertools.product(*(list(values) for values in axes.values())):
            item = dict(zip(axes, combination, strict=True))
            suffix = "-".join(_text(value) for value in combination)
            expansions.append((suffix, {"item": item}))
        return expansions

    def _resolve_collection(self, name: str, key: str, value: Any, line: int | None) -> Any:
        if isinstance(value, str):
            match = INTERPOLATION.fullmatch(value.strip())
            if match:
                try:
                    return _lookup(self.variables, match.group(1))
                except KeyError:
                    raise WatchkeeperError(
                        f"{self.path}:{line}: stage {name}: {key} names ${{{match.group(1)}}}, "
                        f"which {DEFAULT_PARAMS_FILE} (and vars) does not define; add it to "
                        f"{DEFAULT_PARAMS_FILE} or list the values in dvc.yaml."
                    ) from None
        return value

    def _interpolate(
        self,
        stage: str,
        text: str,
        local: dict[str, Any],
        line: int | None,
        placeholders: bool = True,
    ) -> str:
        """Resolve `${...}`: a top-level param becomes a `{placeholder}` (in a command when
        `placeholders`), anything else its value."""
        pieces: list[str] = []
        position = 0
        for match in INTERPOLATION.finditer(text):
            pieces.append(_escape_braces(text[position : match.start()]))
            position = match.end()
            dotted = match.group(1)
            head = re.split(r"[.\[]", dotted)[0]
            if head in local:
                pieces.append(_escape_braces(_text(_lookup(local, dotted))))
            elif (
                placeholders
                and dotted in self.params
                and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", dotted)
            ):
                pieces.append("{" + dotted + "}")
            else:
                try:
                    pieces.append(_escape_braces(_text(_lookup(self.variables, dotted))))
                except KeyError:
                    raise WatchkeeperError(
                        f"{self.path}:{line}: stage {stage}: ${{{dotted}}} is not defined in "
                        f"{DEFAULT_PARAMS_FILE}, vars or the stage's item; define it."
                    ) from None
                if placeholders and head in self.params:
                    self.note(
                        line,
                        stage,
                        f"${{{dotted}}} was written in as its value today "
                        f"({_text(_lookup(self.variables, dotted))}); a change to it in params "
                        "reaches the code through params.yaml, not the command",
                        "cmd",
                    )
        pieces.append(_escape_braces(text[position:].replace("\\${", "${")))
        return "".join(pieces)

    def _translate(
        self, stage: str, body: dict[str, Any], local: dict[str, Any], line: int | None
    ) -> None:
        if body.get("frozen"):
            self.note(line, stage, "frozen: not translated (a frozen stage is never run)", "frozen")
            return
        cmd = body.get("cmd")
        if isinstance(cmd, list):
            cmd = " && ".join(str(part) for part in cmd)
        if not isinstance(cmd, str) or not cmd.strip():
            raise WatchkeeperError(f"{self.path}:{line}: stage {stage} has no cmd; give it one.")
        wdir = normalize_repo_path(str(body.get("wdir", ".")))
        if wdir is None:
            self.note(
                line, stage, f"wdir {body.get('wdir')!r} leaves the repo: not translated", "wdir"
            )
            return
        command = self._interpolate(stage, cmd, local, line)
        if wdir != ".":
            command = f"cd {wdir} && {command}"

        def paths(key: str) -> list[tuple[str, dict[str, Any]]]:
            entries: list[tuple[str, dict[str, Any]]] = []
            for entry in body.get(key) or []:
                raw, options = (
                    next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
                )
                text = self._interpolate(stage, str(raw), local, line, placeholders=False)
                text = text.replace("{{", "{")
                text = text.replace("}}", "}")
                if URL.match(text):
                    self.note(line, stage, f"{key} {text}: not on this disk, not translated", key)
                    continue
                joined = normalize_repo_path(text if wdir == "." else f"{wdir}/{text}")
                if joined is None:
                    self.note(line, stage, f"{key} {text} leaves the repo: not translated", key)
                    continue
                entries.append((joined, options if isinstance(options, dict) else {}))
            return entries

        model: dict[str, Any] = {"train": command}
        deps = [path for path, _ in paths("deps")]
        outs = []
        for path, options in paths("outs"):
            outs.append(path)
            if options.get("remote") or options.get("push") is False:
                self.note(
                    line, stage, f"outs {path}: its DVC remote options are DVC's alone", "outs"
                )
        metrics = paths("metrics")
        json_metrics = [path for path, _ in metrics if path.endswith(".json")]
        if json_metrics:
            model["metrics"] = json_metrics[0]
        for path, _ in metrics:
            if path != model.get("metrics"):
                outs.append(path)
                self.note(
                    line,
                    stage,
                    f"metrics {path}: kept as an out (one JSON metrics file)",
                    "metrics",
                )
        for path, _ in paths("plots"):
            outs.append(path)  # a stage's plots file is one of its outputs in DVC
            self.note(
                line,
                stage,
                f"plots {path}: not translated as a plot (kept as an out; Watchkeeper draws "
                "step metrics)",
                "plots",
            )
        if body.get("always_changed"):
            self.note(
                line,
                stage,
                "always_changed: not translated (train it when you want)",
                "always_changed",
            )
        self._params_of(stage, body.get("params"), line, model, deps)
        if deps:
            model["deps"] = list(dict.fromkeys(deps))
        if outs:
            model["outs"] = list(dict.fromkeys(outs))
        self._add(stage, model, line)

    def _params_of(
        self,
        stage: str,
        declared: Any,
        line: int | None,
        model: dict[str, Any],
        deps: list[str],
    ) -> None:
        uses_params = bool(declared) or "{" in model["train"].replace("{{", "")
        for entry in declared or []:
            if isinstance(entry, dict):
                for file_name in entry:
                    if str(file_name) != DEFAULT_PARAMS_FILE:
                        self.note(line, stage, f"params from {file_name}: not translated", "params")
        if not uses_params or not self.params:
            return
        storable = {key: value for key, value in self.params.items() if _storable(value)}
        for key in sorted(self.params.keys() - storable.keys()):
            self.note(
                line, stage, f"param {key} (null or not a plain value): not translated", "params"
            )
        model["params"] = storable
        model["params_file"] = DEFAULT_PARAMS_FILE
        deps[:] = [dep for dep in deps if dep != DEFAULT_PARAMS_FILE]

    def _add(self, stage: str, model: dict[str, Any], line: int | None) -> None:
        name = model_name_for(stage)
        if name in self.result.models:
            base = name[: MAX_MODEL_NAME_LENGTH - 4]
            name = next(
                f"{base}-{n}" for n in itertools.count(2) if f"{base}-{n}" not in self.result.models
            )
        if name != stage:
            self.note(
                line,
                stage,
                f"is model {name} (a model name uses letters, digits, '_', '.' and '-', "
                f"starts with a letter or digit and has at most {MAX_MODEL_NAME_LENGTH} "
                "characters)",
            )
        self.result.models[name] = model
        self.result.sources[name] = f"{DVC_FILE}:{line} stage {stage}"


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _storable(value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _storable(item) for key, item in value.items())
    return False


def model_name_for(stage: str) -> str:
    """A valid model name for a DVC stage name (`train@a b` -> `train-a-b`).

    >>> model_name_for("train@small"), model_name_for("_prep"), model_name_for("ok.1")
    ('train-small', 'prep', 'ok.1')
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stage).lstrip("_.-")[:MAX_MODEL_NAME_LENGTH]
    name = name.rstrip("-") or "stage"
    return name if MODEL_NAME.match(name) else f"s{name}"[:MAX_MODEL_NAME_LENGTH]


def convert_dvc(root: Path) -> DvcConversion:
    """The models of `root/dvc.yaml` (with params.yaml), and what could not be translated."""
    return _Converter(root).convert()


def spec_text_with(root: Path, existing: str | None, conversion: DvcConversion) -> str:
    """watchkeeper.toml text: `existing` (or a new file) plus the converted models.

    Models already declared there are kept as they are (and noted). The text is validated
    like any project file before it is returned.
    """
    import tomlkit

    document = tomlkit.parse(existing) if existing else tomlkit.document()
    if not existing:
        document.add(
            tomlkit.comment(
                "Watchkeeper project file, translated from dvc.yaml by "
                "`watchkeeper init --from-dvc`."
            )
        )
        document.add(
            tomlkit.comment(
                "Params reach the code through params.yaml, as with DVC: "
                "change them here (or with --param)."
            )
        )
    if "models" not in document:
        document.add("models", tomlkit.table(is_super_table=True))
    models = document["models"]
    for name, model in conversion.models.items():
        if name in models:
            conversion.notes.append(
                f"{SPEC_FILE}: model {name} is already declared there: kept it as it is"
            )
            continue
        table = tomlkit.table()
        table.add(tomlkit.comment(f"from {conversion.sources[name]}"))
        for key, value in model.items():
            if key == "params":
                inline = tomlkit.inline_table()
                inline.update(value)
                table.add(key, inline)
            else:
                table.add(key, value)
        models.add(name, table)
    text = tomlkit.dumps(document)
    parse_project(root, root / SPEC_FILE, text)
    return text


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(MD5_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _recorded_md5s(root: Path, dep: str) -> list[str]:
    """The md5s DVC recorded for `dep`: in `dep.dvc`, and in dvc.lock's deps and outs."""
    found: list[str] = []
    candidates: list[tuple[Path, str]] = [(root / f"{dep}.dvc", ".")]
    candidates.append((root / DVC_LOCK, "lock"))
    for path, kind in candidates:
        if not path.is_file():
            continue
        try:
            document, _ = _load_yaml(path)
        except WatchkeeperError:
            continue
        entries: list[Any] = []
        if kind == "." and isinstance(document, dict):
            entries = [
                dict(entry, path=dep)
                for entry in document.get("outs") or []
                if isinstance(entry, dict) and entry.get("path") in (Path(dep).name, dep)
            ]
        elif isinstance(document, dict):
            for stage in (document.get("stages") or {}).values():
                if not isinstance(stage, dict):
                    continue
                wdir = str(stage.get("wdir", "."))
                for entry in [*(stage.get("deps") or []), *(stage.get("outs") or [])]:
                    if not isinstance(entry, dict) or "path" not in entry:
                        continue
                    joined = normalize_repo_path(
                        str(entry["path"]) if wdir == "." else f"{wdir}/{entry['path']}"
                    )
                    if joined == dep:
                        entries.append(entry)
        found.extend(str(entry["md5"]) for entry in entries if entry.get("md5"))
    return list(dict.fromkeys(found))


def _directory_matches(root: Path, path: Path, md5: str) -> bool:
    """True when the folder holds exactly the files of DVC's `.dir` listing in the local cache."""
    digest = md5.removesuffix(".dir")
    for cache in (root / ".dvc/cache/files/md5", root / ".dvc/cache"):
        listing = cache / digest[:2] / f"{digest[2:]}.dir"
        if listing.is_file():
            break
    else:
        return False
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    on_disk = sorted(
        file.relative_to(path).as_posix() for file in path.rglob("*") if file.is_file()
    )
    if on_disk != sorted(str(entry.get("relpath")) for entry in entries):
        return False
    return all(_file_md5(path / entry["relpath"]) == entry.get("md5") for entry in entries)


def dvc_md5_for(root: Path, dep: str) -> str | None:
    """DVC's md5 of a data dep, when `dep.dvc` or dvc.lock records one that matches the data.

    Only an md5 the data on disk still has is returned, so `dvc checkout` with it gives back
    exactly the data the version was trained on.
    """
    recorded = _recorded_md5s(root, dep)
    if not recorded:
        return None
    path = root / dep
    if path.is_dir():
        return next((md5 for md5 in recorded if _directory_matches(root, path, md5)), None)
    if not path.is_file():
        return None
    actual = _file_md5(path)
    return actual if actual in recorded else None
