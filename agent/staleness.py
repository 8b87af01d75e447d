"""The one place that decides whether a model version is stale, and says why, naming paths."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger.queries import is_builtin_repo, latest_succeeded
from agent.paths import WatchkeeperPaths
from agent.project.git import changed_files, head_hashes, object_type, working_hashes
from agent.project.spec import ModelSpec, ProjectSpec, load_project
from agent.runs.data_deps import DataDepChange, data_dep_change

MAX_NAMED_FILES = 8


@dataclass(frozen=True)
class StaleReason:
    """One thing that changed: `kind` is command, params, deps, code, data, untrained,
    undeclared or unreadable; `paths` names the paths involved; `drift` holds per-file drift
    summaries."""

    kind: str
    message: str
    paths: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "paths": list(self.paths),
            "drift": list(self.drift),
        }


@dataclass(frozen=True)
class Staleness:
    """Every reason a version no longer matches what the repo would build now.

    `builtin` marks a built-in model (such as `coding-time`): it has no repo to compare with
    and is kept current by the agent's scheduled refit, so it is never stale.
    """

    reasons: tuple[StaleReason, ...]
    builtin: bool = False

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    @property
    def messages(self) -> list[str]:
        return [reason.message for reason in self.reasons]


@dataclass(frozen=True)
class ModelStatus:
    """A declared model and its newest succeeded version (None if it has none)."""

    repo: Path
    model: str
    version: dict[str, Any] | None
    staleness: Staleness


def _name_files(files: list[str]) -> str:
    named = ", ".join(files[:MAX_NAMED_FILES])
    more = len(files) - MAX_NAMED_FILES
    return named + (f" and {more} more" if more > 0 else "")


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def params_reason(old: dict[str, Any], new: dict[str, Any]) -> StaleReason | None:
    """What differs between the params a version used and the declared ones."""
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            changes.append(f"{key} removed (was {_short(old[key])})")
        elif key not in old:
            changes.append(f"{key} added (= {_short(new[key])})")
        elif _short(old[key]) != _short(new[key]):
            changes.append(f"{key} {_short(old[key])} → {_short(new[key])}")
    if not changes:
        return None
    return StaleReason("params", "params changed: " + ", ".join(changes))


class StalenessChecker:
    """Compares versions with the current repos, reading each repo's state once."""

    def __init__(self, db: Database, paths: WatchkeeperPaths | None = None) -> None:
        self.db = db
        self.paths = paths or WatchkeeperPaths.from_environment()
        self._projects: dict[Path, ProjectSpec] = {}
        self._working: dict[tuple[Path, str], str | None] = {}
        self._head: dict[tuple[Path, str], str | None] = {}
        self._data: dict[tuple[int, Path], DataDepChange | None] = {}

    def project(self, root: Path) -> ProjectSpec:
        """The repo's current watchkeeper.toml (read once)."""
        if root not in self._projects:
            self._projects[root] = load_project(root)
        return self._projects[root]

    def model_status(self, root: Path, model: ModelSpec, repo_id: int | None) -> ModelStatus:
        """Fresh or stale for a declared model, judged on its newest succeeded version."""
        version = latest_succeeded(self.db, repo_id, model.name) if repo_id is not None else None
        if version is None:
            reason = StaleReason(
                "untrained",
                f"{model.name} has no successful version yet; "
                f"train it with `watchkeeper train {model.name}`",
            )
            return ModelStatus(root, model.name, None, Staleness((reason,)))
        return ModelStatus(root, model.name, version, self.check(version))

    def check(self, version: dict[str, Any]) -> Staleness:
        """Why a version (a decoded model_versions row with `repo_path` and `model`) is stale."""
        if is_builtin_repo(version["repo_path"]):
            return Staleness((), builtin=True)
        root = Path(version["repo_path"])
        if not root.is_dir():
            return Staleness((StaleReason("undeclared", f"the repo {root} no longer exists"),))
        try:
            project = self.project(root)
        except WatchkeeperError as error:
            return Staleness((StaleReason("unreadable", str(error)),))
        model = project.models.get(version["model"])
        if model is None:
            return Staleness(
                (
                    StaleReason(
                        "undeclared",
                        f"{version['model']} is no longer declared in {project.path}",
                    ),
                )
            )
        reasons: list[StaleReason] = []
        if version["train_command"] != model.train:
            reasons.append(
                StaleReason(
                    "command",
                    f"train command changed: {version['train_command']!r} → {model.train!r}",
                )
            )
        params = params_reason(version.get("params") or {}, model.params)
        if params:
            reasons.append(params)
        code: dict[str, str | None] = version.get("code") or {}
        data: dict[str, dict[str, Any]] = version.get("data") or {}
        added = [dep for dep in model.deps if dep not in code and dep not in data]
        removed = [dep for dep in [*code, *data] if dep not in model.deps]
        if added or removed:
            parts = [f"{dep} added" for dep in added] + [f"{dep} removed" for dep in removed]
            reasons.append(
                StaleReason("deps", "deps changed: " + ", ".join(parts), tuple(added + removed))
            )
        kept_code = {dep: old for dep, old in code.items() if dep in model.deps}
        reasons.extend(self._code_reasons(root, version["commit_sha"], kept_code))
        for dep, record in data.items():
            if dep in model.deps:
                reason = self._data_reason(root, dep, int(record["snapshot_id"]))
                if reason:
                    reasons.append(reason)
        return Staleness(tuple(reasons))

    def _hashes(self, root: Path, deps: list[str]) -> None:
        missing = [dep for dep in deps if (root, dep) not in self._working]
        if missing:
            for dep, value in working_hashes(root, missing).items():
                self._working[(root, dep)] = value
            for dep, value in head_hashes(root, missing).items():
                self._head[(root, dep)] = value

    def _code_reasons(
        self, root: Path, commit: str | None, recorded: dict[str, str | None]
    ) -> list[StaleReason]:
        self._hashes(root, list(recorded))
        reasons: list[StaleReason] = []
        since = f" since {commit[:10]}" if commit else ""
        for dep, old in recorded.items():
            current = self._working[(root, dep)]
            if current == old:
                continue
            if current is None:
                reasons.append(StaleReason("code", f"code dep {dep} no longer exists", (dep,)))
                continue
            head = self._head[(root, dep)]
            committed = head != old
            uncommitted = current != head
            label = " and ".join(
                word
                for word, flag in (("committed", committed), ("uncommitted", uncommitted))
                if flag
            )
            files: list[str] = [dep]
            if old and object_type(root, old) == "tree" and object_type(root, current) == "tree":
                files = [
                    f"{path} ({status})" for status, path in changed_files(root, old, current, dep)
                ] or [dep]
            elif old and object_type(root, old) == "blob":
                files = [f"{dep} (modified)"]
            reasons.append(
                StaleReason(
                    "code",
                    f"code changed{since} ({label}) in {dep}: {_name_files(files)}",
                    tuple(f.rsplit(" (", 1)[0] for f in files),
                )
            )
        return reasons

    def _data_reason(self, root: Path, dep: str, snapshot_id: int) -> StaleReason | None:
        path = root / dep
        if not path.exists():
            return StaleReason("data", f"data dep {dep} no longer exists", (dep,))
        key = (snapshot_id, path)
        if key not in self._data:
            self._data[key] = data_dep_change(self.db, snapshot_id, path, self.paths)
        change = self._data[key]
        if change is None:
            return None
        parts = []
        for word, files in (
            ("added", change.added),
            ("removed", change.removed),
            ("modified", change.modified),
        ):
            if files:
                parts.append(f"{len(files)} {word} ({_name_files(files)})")
        summary = "; ".join(parts) or "content changed"
        message = f"data changed in {dep}: {summary}"
        if change.drift:
            message += "; drift: " + "; ".join(change.drift)
        named = tuple(
            f"{dep}/{name}" if path.is_dir() else dep
            for name in [*change.added, *change.removed, *change.modified]
        )
        return StaleReason("data", message, named or (dep,), tuple(change.drift))


def check_version(db: Database, version: dict[str, Any]) -> Staleness:
    """Staleness of one version; see StalenessChecker.check."""
    return StalenessChecker(db).check(version)
