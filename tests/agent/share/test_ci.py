"""`watchkeeper ci`: verdicts per model, the gate's exit status, and its errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.agent.runs.gitrepo import PYTHON, SPEC, commit_all, git
from tests.agent.share.people import Person, make_remote, person

THREE_MODELS = SPEC + textwrap.dedent(
    f"""\

    [models.report]
    train = "{PYTHON} report.py"
    deps = ["report.py"]

    [models.forecast]
    train = "{PYTHON} report.py"
    deps = ["report.py", "forecast.py"]
    """
)


def _team(tmp_path: Path) -> tuple[Person, Person]:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    (ada.clone / "watchkeeper.toml").write_text(THREE_MODELS)
    (ada.clone / "report.py").write_text("print('report')\n")
    (ada.clone / "forecast.py").write_text("print('forecast')\n")
    commit_all(ada.clone, "three models")
    git(ada.clone, "push", "-q", "origin", "main")
    ada.ok("train", "churn")
    ada.ok("train", "report")
    ada.ok("push")
    bob = person(tmp_path, "Bob", remote)
    git(bob.clone, "checkout", "-q", "-b", "feature")
    return ada, bob


def _fresh_home(who: Person, tmp_path: Path, name: str) -> Person:
    return Person(who.name, who.clone, tmp_path / name)


def test_each_model_gets_a_verdict_and_the_gate_follows_fail_on(tmp_path: Path) -> None:
    _, bob = _team(tmp_path)
    ci_bob = _fresh_home(bob, tmp_path, "ci-home-1")
    untouched = ci_bob.run("ci", "--json", str(tmp_path / "r0.json"))
    assert untouched.returncode == 0, untouched.stdout + untouched.stderr
    verdicts = {
        m["model"]: m["verdict"] for m in json.loads((tmp_path / "r0.json").read_text())["models"]
    }
    assert verdicts == {"churn": "fresh", "report": "fresh", "forecast": "never trained"}
    assert ci_bob.run("ci", "--fail-on", "never-trained").returncode == 1

    (bob.clone / "src" / "helper.py").write_text('MESSAGE = "new"\n')
    text = (bob.clone / "watchkeeper.toml").read_text().replace("lr = 0.01", "lr = 0.02")
    (bob.clone / "watchkeeper.toml").write_text(text)
    commit_all(bob.clone, "tune churn")
    ci_bob = _fresh_home(bob, tmp_path, "ci-home-2")
    markdown_path, json_path = tmp_path / "r.md", tmp_path / "r.json"
    done = ci_bob.run("ci", "--markdown", str(markdown_path), "--json", str(json_path))
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(json_path.read_text())
    churn = next(m for m in report["models"] if m["model"] == "churn")
    assert churn["verdict"] == "stale"
    assert {r["kind"] for r in churn["reasons"]} == {"code", "params"}
    assert "src/helper.py" in churn["touched"]
    assert "watchkeeper.toml: [models.churn] params" in churn["touched"]
    assert churn["current_version"]["author"] == "Ada <ada@example.org>"
    assert churn["current_version"]["pulled"] is True
    assert {m["model"]: m["verdict"] for m in report["models"]}["report"] == "fresh"
    assert "params changed: lr 0.01 → 0.02" in markdown_path.read_text()
    assert ci_bob.run("ci", "--fail-on", "never").returncode == 0


def test_ci_without_a_project_file_exits_2(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    git(ada.clone, "rm", "-q", "watchkeeper.toml")
    commit_all(ada.clone, "no spec")
    done = ada.run("ci", "--base", "HEAD~1")
    assert done.returncode == 2
    assert "watchkeeper.toml does not exist, so no model is declared here" in done.stderr
    assert "Traceback" not in done.stderr


def test_ci_in_a_shallow_clone_without_the_base_asks_for_more_history(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    git(ada.clone, "checkout", "-q", "-b", "feature")
    (ada.clone / "train.py").write_text("print('changed')\n")
    commit_all(ada.clone, "change")
    git(ada.clone, "push", "-q", "origin", "feature")
    shallow = tmp_path / "shallow"
    git(
        tmp_path,
        "clone",
        "-q",
        "--depth",
        "1",
        "--branch",
        "feature",
        f"file://{remote}",
        str(shallow),
    )
    runner = Person("CI", shallow, tmp_path / "ci-home")
    for args in (("ci", "--base", "origin/main"), ("ci",)):
        done = runner.run(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "shallow clone; fetch more history" in done.stderr
        assert "fetch-depth: 0" in done.stderr and "Traceback" not in done.stderr
    git(
        shallow, "fetch", "-q", "--unshallow", "origin", "+refs/heads/main:refs/remotes/origin/main"
    )
    assert runner.run("ci", "--base", "origin/main").returncode == 0


DATA_SPEC = SPEC.replace(
    'deps = ["train.py", "src/"]', 'deps = ["train.py", "src/", "data/train.csv"]'
)


def test_a_data_dep_is_compared_when_present_and_noted_when_absent(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    ada = person(tmp_path, "Ada", remote, first=True)
    (ada.clone / "watchkeeper.toml").write_text(DATA_SPEC)
    (ada.clone / ".gitignore").write_text("data/\n")
    (ada.clone / "data").mkdir()
    (ada.clone / "data" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    commit_all(ada.clone, "a data dep")
    git(ada.clone, "push", "-q", "origin", "main")
    ada.ok("train", "churn")
    ada.ok("push", "churn")
    bob = person(tmp_path, "Bob", remote)
    git(bob.clone, "checkout", "-q", "-b", "feature")

    absent = Person("CI", bob.clone, tmp_path / "ci-absent")
    done = absent.run("ci", "--json", str(tmp_path / "absent.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    [churn] = json.loads((tmp_path / "absent.json").read_text())["models"]
    assert churn["verdict"] == "fresh"
    assert churn["notes"] == ["data/train.csv: data not in this checkout, not compared"]

    (bob.clone / "data").mkdir()
    (bob.clone / "data" / "train.csv").write_text("x,y\n1,2\n3,4\n")
    same = Person("CI", bob.clone, tmp_path / "ci-same")
    assert same.run("ci").returncode == 0
    (bob.clone / "data" / "train.csv").write_text("x,y\n1,2\n3,5\n")
    changed = Person("CI", bob.clone, tmp_path / "ci-changed")
    done = changed.run("ci", "--json", str(tmp_path / "changed.json"))
    assert done.returncode == 1, done.stdout + done.stderr
    [churn] = json.loads((tmp_path / "changed.json").read_text())["models"]
    assert churn["verdict"] == "stale"
    assert [r["kind"] for r in churn["reasons"]] == ["data"]
    assert "data changed in data/train.csv: 1 modified" in churn["reasons"][0]["message"]
