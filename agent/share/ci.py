"""The CI gate: which models the change under review makes stale, as Markdown and JSON.

It runs in a fresh clone with an empty home: it pulls the shared ledger, reads
`watchkeeper.toml`, diffs the change from its base and judges each model's current version
with the same staleness code as `watchkeeper status`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.errors import WatchkeeperError
from agent.ledger import write_transaction
from agent.ledger.queries import current_version_of, register_repo
from agent.project.git import git
from agent.project.spec import SPEC_FILE, ModelSpec, ProjectSpec, load_project, parse_project
from agent.share import gitref
from agent.staleness import StalenessChecker, StaleReason

FAIL_ON = ("never", "stale", "never-trained")
DEFAULT_BRANCH_GUESSES = ("main", "master")


@dataclass
class ModelReport:
    """One model in the CI report."""

    model: str
    verdict: str
    """`stale` (this change, or the data present, makes it stale), `already stale` (stale, but
    not through anything this change touches), `fresh` or `never trained`."""
    reasons: list[StaleReason] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    version: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        version = self.version
        return {
            "model": self.model,
            "verdict": self.verdict,
            "reasons": [reason.as_json() for reason in self.reasons],
            "touched": self.touched,
            "notes": self.notes,
            "run": f"watchkeeper train {self.model}",
            "current_version": None
            if version is None
            else {
                "id": version["global_id"],
                "version": version["version"],
                "author": version.get("author"),
                "pulled": version.get("pulled_at") is not None,
                "commit": version["commit_sha"],
                "metrics": version["metrics"] or {},
                "params": version["params"] or {},
                "ended_at": version["ended_at"],
            },
        }


@dataclass
class CiReport:
    """The whole report: the base compared against, the changed files and each model."""

    root: Path
    base: str
    head: str
    changed: list[str]
    models: list[ModelReport]
    ledger: str
    warnings: list[str] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(1 for model in self.models if model.verdict == verdict)

    def exit_code(self, fail_on: str) -> int:
        """0 when nothing fails the gate, 1 when something does (see --fail-on)."""
        if fail_on == "never":
            return 0
        failing = {"stale"} | ({"never trained"} if fail_on == "never-trained" else set())
        return 1 if any(model.verdict in failing for model in self.models) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "repo": str(self.root),
            "base": self.base,
            "head": self.head,
            "changed_files": len(self.changed),
            "ledger": self.ledger,
            "stale": self.count("stale"),
            "never_trained": self.count("never trained"),
            "models": [model.as_json() for model in self.models],
            "warnings": self.warnings,
        }


def resolve_base(root: Path, base: str | None, remote_name: str) -> str:
    """The merge base of HEAD with `base` (default: the remote's default branch)."""
    candidates = [base] if base else _default_branch_refs(root, remote_name)
    for ref in candidates:
        commit = gitref.ref_commit(root, ref)
        if commit is None:
            continue
        merge_base = git(root, "merge-base", commit, "HEAD", check=False).decode().strip()
        if merge_base:
            return merge_base
        if gitref.is_shallow(root):
            raise _fetch_more(root, ref, "has no common history with HEAD in this shallow clone")
        raise WatchkeeperError(f"--base {ref}: it shares no history with HEAD; name another base")
    wanted = base or " or ".join(candidates) or "the default branch"
    if gitref.is_shallow(root):
        raise _fetch_more(root, wanted, "is not in this shallow clone")
    raise WatchkeeperError(
        f"--base {wanted}: no such commit or branch in {root}; give a branch, tag or commit "
        "(for a pull request, the target branch such as origin/main)"
    )


def _fetch_more(root: Path, ref: str, problem: str) -> WatchkeeperError:
    return WatchkeeperError(
        f"--base {ref} {problem}; fetch more history (`git fetch --unshallow`, or "
        "`fetch-depth: 0` in actions/checkout, or GIT_DEPTH: 0 in GitLab CI) and run again"
    )


def _default_branch_refs(root: Path, remote_name: str) -> list[str]:
    head = (
        git(root, "symbolic-ref", "--quiet", f"refs/remotes/{remote_name}/HEAD", check=False)
        .decode()
        .strip()
    )
    refs = [head] if head else []
    refs += [f"refs/remotes/{remote_name}/{name}" for name in DEFAULT_BRANCH_GUESSES]
    refs += [f"refs/heads/{name}" for name in DEFAULT_BRANCH_GUESSES]
    return refs


def changed_files(root: Path, base: str) -> list[str]:
    """Files that differ between `base` and the working tree (committed or not)."""
    output = git(root, "diff", "--name-only", "-z", "--no-renames", base)
    return [name for name in output.decode().split("\0") if name]


def base_spec(root: Path, base: str) -> ProjectSpec | None:
    """`watchkeeper.toml` as it was at `base` (None when it did not exist or does not parse)."""
    text = git(root, "show", f"{base}:{SPEC_FILE}", check=False)
    if not text:
        return None
    try:
        return parse_project(root, root / SPEC_FILE, text.decode("utf-8"))
    except (WatchkeeperError, UnicodeDecodeError):
        return None


def touched_paths(model: ModelSpec, changed: list[str]) -> list[str]:
    """The changed files that are, or are inside, one of the model's deps.

    >>> touched_paths(ModelSpec("m", "t", deps=("src/", "train.py")), ["src/a.py", "README.md"])
    ['src/a.py']
    """
    found = []
    for name in changed:
        for dep in model.deps:
            clean = dep.rstrip("/")
            if clean in (".", "") or name == clean or name.startswith(clean + "/"):
                found.append(name)
                break
    return found


def spec_changes(old: ModelSpec | None, new: ModelSpec) -> list[str]:
    """What changed in a model's declaration since the base (train, params, deps)."""
    if old is None:
        return [f"{SPEC_FILE}: [models.{new.name}] is new"]
    changes = []
    for field_name in ("train", "params", "deps"):
        if getattr(old, field_name) != getattr(new, field_name):
            changes.append(f"{SPEC_FILE}: [models.{new.name}] {field_name}")
    return changes


def judge(
    db: Database,
    root: Path,
    repo_id: int,
    project: ProjectSpec,
    changed: list[str],
    previous: ProjectSpec | None,
) -> list[ModelReport]:
    """One report per declared model, judged on its current version."""
    checker = StalenessChecker(db, drift=False)
    reports = []
    for name, model in project.models.items():
        touched = touched_paths(model, changed) + spec_changes(
            previous.models.get(name) if previous else None, model
        )
        version = current_version_of(db, repo_id, name)
        if version is None:
            note = f"{name} has no shared version yet: train it and `watchkeeper push`"
            reports.append(ModelReport(name, "never trained", [], touched, [note]))
            continue
        notes: list[str] = []
        reasons = []
        for reason in checker.check(version).reasons:
            if reason.kind == "data" and not all(
                os.path.lexists(root / path) for path in reason.paths[:1]
            ):
                notes.append(f"{reason.paths[0]}: data not in this checkout, not compared")
                continue
            reasons.append(reason)
        if not reasons:
            verdict = "fresh"
        elif touched or any(reason.kind == "data" for reason in reasons):
            verdict = "stale"
        else:
            verdict = "already stale"
        reports.append(ModelReport(name, verdict, reasons, touched, notes, version))
    return reports


def run_ci(
    db: Database, root: Path, *, base: str | None, remote_name: str, pull_ledger: bool = True
) -> CiReport:
    """Pull the shared ledger, diff the change from its base and judge every declared model."""
    if not (root / SPEC_FILE).is_file():
        raise WatchkeeperError(
            f"{root / SPEC_FILE} does not exist, so no model is declared here; commit one "
            "(`watchkeeper init` writes it) or run `watchkeeper ci` at the root of the repo "
            "that declares the models"
        )
    project = load_project(root)
    base_commit = resolve_base(root, base, remote_name)
    head = git(root, "rev-parse", "HEAD").decode().strip()
    warnings: list[str] = []
    ledger = "not fetched"
    if pull_ledger:
        from agent.share.sync import pull

        result = pull(db, root, remote_name)
        ledger = (
            f"{gitref.LEDGER_REF} at {result.commit[:12]} from {remote_name}"
            if result.commit
            else f"{remote_name} has no {gitref.LEDGER_REF} yet"
        )
        warnings += [f"{path}: refused: {why}" for path, why in result.applied.refused]
    with write_transaction(db):
        repo_id = register_repo(db, root)
    changed = changed_files(root, base_commit)
    models = judge(db, root, repo_id, project, changed, base_spec(root, base_commit))
    return CiReport(root, base_commit, head, changed, models, ledger, warnings)


VERDICT_MARKS = {
    "stale": "🔴 stale",
    "already stale": "🟠 already stale",
    "fresh": "🟢 fresh",
    "never trained": "⚪ never trained",
}


def markdown(report: CiReport, fail_on: str) -> str:
    """The report as a pull-request comment: a summary line, then a table per model."""
    lines = ["## Watchkeeper: models and this change", ""]
    stale = report.count("stale")
    summary = (
        f"**{stale} model{'s' if stale != 1 else ''} made stale by this change** "
        if stale
        else "**No model is made stale by this change.** "
    )
    lines.append(
        summary + f"Compared with `{report.base[:10]}` ({len(report.changed)} files changed); "
        f"shared ledger: {report.ledger}; gate: `--fail-on {fail_on}`."
    )
    for model in report.models:
        lines += ["", f"### {model.model}: {VERDICT_MARKS.get(model.verdict, model.verdict)}", ""]
        version = model.version
        lines += ["| | |", "|---|---|"]
        if version is None:
            lines.append("| current version | none |")
        else:
            pulled = ", shared" if version.get("pulled_at") is not None else ""
            lines.append(
                f"| current version | `{str(version['global_id'])[:10]}` "
                f"(v{version['version']}{pulled}) at `{str(version['commit_sha'])[:10]}` |"
            )
            lines.append(f"| trained by | {_cell(version.get('author') or 'this machine')} |")
            metrics = ", ".join(
                f"{key}={_number(value)}" for key, value in (version["metrics"] or {}).items()
            )
            lines.append(f"| metrics | {_cell(metrics or '-')} |")
        touched = ", ".join(f"`{path}`" for path in model.touched[:10])
        more = len(model.touched) - 10
        touched += f" and {more} more" if more > 0 else ""
        lines.append(f"| this change touches | {_cell(touched or 'nothing it depends on')} |")
        for reason in model.reasons:
            lines.append(f"| why | {_cell(reason.message)} |")
        for note in model.notes:
            lines.append(f"| note | {_cell(note)} |")
        if model.verdict != "fresh":
            lines.append(f"| to run | `watchkeeper train {model.model}` |")
    for warning in report.warnings:
        lines += ["", f"> warning: {warning}"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def write_reports(
    report: CiReport, fail_on: str, markdown_path: Path | None, json_path: Path | None
) -> None:
    if markdown_path is not None:
        markdown_path.write_text(markdown(report, fail_on), encoding="utf-8")
    if json_path is not None:
        data = {**report.as_json(), "exit_code": report.exit_code(fail_on), "at": time.time()}
        json_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
