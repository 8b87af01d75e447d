"""watchkeeper.toml: a valid file, and every kind of mistake named with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.errors import WatchkeeperError
from agent.project.spec import MAX_MODEL_NAME_LENGTH, TEMPLATE, load_project, normalize_repo_path


def write_spec(root: Path, text: str) -> Path:
    path = root / "watchkeeper.toml"
    path.write_text(textwrap.dedent(text))
    return path


def load_error(root: Path, text: str) -> str:
    write_spec(root, text)
    with pytest.raises(WatchkeeperError) as raised:
        load_project(root)
    return str(raised.value)


def test_a_full_model_table_is_read_with_its_values(tmp_path: Path) -> None:
    write_spec(
        tmp_path,
        """\
        [models.churn]
        train   = "python train.py --data data/train.csv --out model.pkl"
        deps    = ["train.py", "./src/", "data/train.csv"]
        outs    = ["model.pkl"]
        metrics = "metrics.json"
        params  = { lr = 0.01, epochs = 5 }
        remote  = "gpu-box"
        on_stale = "retrain"
        resources = { cpus = 4, gpus = 1, memory = "8G", time = "02:00:00", partition = "gpu" }

        [models.tiny]
        train = "make tiny"
        """,
    )
    project = load_project(tmp_path)
    churn = project.model("churn")
    assert churn.deps == ("train.py", "src", "data/train.csv")
    assert churn.outs == ("model.pkl",)
    assert churn.metrics == "metrics.json"
    assert churn.params == {"lr": 0.01, "epochs": 5}
    assert churn.remote == "gpu-box" and churn.on_stale == "retrain"
    assert churn.resources["memory"] == "8G"
    tiny = project.model("tiny")
    assert (tiny.deps, tiny.outs, tiny.metrics, tiny.params) == ((), (), None, {})
    assert (tiny.remote, tiny.on_stale) == ("local", "notify")


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        [models.churn]
        train = "python train.py"
        deps = ["train.py"
        outs = ["model.pkl"]
        """,
    )
    assert message.startswith(f"{tmp_path / 'watchkeeper.toml'}:4")
    assert "invalid TOML" in message


def test_an_unknown_model_key_suggests_the_close_one_with_its_line(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        [models.churn]
        train = "python train.py"
        deps = ["train.py"]
        ouds = ["model.pkl"]
        """,
    )
    assert message.startswith(f"{tmp_path / 'watchkeeper.toml'}:4:")
    assert "[models.churn] ouds is not a known key" in message
    assert "did you mean 'outs'?" in message


def test_an_unknown_top_level_section_suggests_models(tmp_path: Path) -> None:
    message = load_error(tmp_path, '# comment\n[modles.churn]\ntrain = "x"\n')
    assert message.startswith(f"{tmp_path / 'watchkeeper.toml'}:2:")
    assert "did you mean 'models'?" in message


def test_an_unknown_resource_key_is_found_in_an_inline_table(tmp_path: Path) -> None:
    message = load_error(
        tmp_path,
        """\
        [models.churn]
        train = "x"

        resources = { cpus = 2, gpu = 1 }
        """,
    )
    assert ":4:" in message and "[models.churn.resources] gpu" in message
    assert "did you mean 'gpus'?" in message


@pytest.mark.parametrize(
    ("body", "line", "expected"),
    [
        ('deps = ["train.py"]\n', 1, "needs a `train` command"),
        ('train = "x"\non_stale = "retrian"\n', 3, "did you mean 'retrain'?"),
        ('train = "x"\ndeps = ["../outside"]\n', 3, "leaves the repo"),
        ('train = "x"\nouts = ["/etc/passwd"]\n', 3, "leaves the repo"),
        ('train = "x"\ndeps = "src/"\nmetrics = 3\n', 4, "paths must be non-empty strings"),
        ('train = "x"\nparams = { when = 2024-01-01 }\n', 3, "params must be strings"),
        ('train = "x"\nresources = { cpus = 0 }\n', 3, "whole number >= 1"),
        ('train = "x"\nresources = { memory = "lots" }\n', 3, 'size like "4G"'),
        ('train = "x"\nremote = 3\n', 3, "must be a non-empty string"),
    ],
)
def test_bad_values_are_named_with_their_line(
    tmp_path: Path, body: str, line: int, expected: str
) -> None:
    message = load_error(tmp_path, "[models.churn]\n" + body)
    assert message.startswith(f"{tmp_path / 'watchkeeper.toml'}:{line}:"), message
    assert expected in message


def test_an_invalid_model_name_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[models."churn@2"]\ntrain = "x"\n')
    assert "not a valid model name" in message and ":1:" in message


def test_an_unknown_model_lists_the_declared_ones(tmp_path: Path) -> None:
    write_spec(tmp_path, '[models.churn]\ntrain = "x"\n[models.fraud]\ntrain = "y"\n')
    with pytest.raises(WatchkeeperError) as raised:
        load_project(tmp_path).model("chrun")
    assert "models declared there: churn, fraud" in str(raised.value)
    assert "did you mean 'churn'?" in str(raised.value)


def test_a_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(WatchkeeperError, match="watchkeeper init"):
        load_project(tmp_path)


def test_the_init_template_is_valid_and_declares_nothing(tmp_path: Path) -> None:
    write_spec(tmp_path, TEMPLATE)
    assert load_project(tmp_path).models == {}
    uncommented = "\n".join(
        line.removeprefix("# ")
        for line in TEMPLATE.splitlines()
        if line.startswith("# ") and ("=" in line or line.startswith("# [models"))
    )
    write_spec(tmp_path, uncommented)
    assert load_project(tmp_path).model("churn").on_stale == "notify"


def test_repo_paths_are_normalised_and_escapes_refused() -> None:
    assert normalize_repo_path("./data//train.csv") == "data/train.csv"
    assert normalize_repo_path("src/../lib/") == "lib"
    assert normalize_repo_path(".") == "."
    assert normalize_repo_path("../x") is None
    assert normalize_repo_path("/abs") is None


def test_a_model_name_over_the_limit_is_refused_with_its_line(tmp_path: Path) -> None:
    long_name = "m" * (MAX_MODEL_NAME_LENGTH + 1)
    message = load_error(tmp_path, f'# models\n\n[models.{long_name}]\ntrain = "x"\n')
    assert message.startswith(f"{tmp_path / 'watchkeeper.toml'}:3:"), message
    assert f"is {MAX_MODEL_NAME_LENGTH + 1} characters long" in message
    assert f"at most {MAX_MODEL_NAME_LENGTH}" in message
    assert "\n" not in message


def test_a_model_name_at_the_limit_is_accepted(tmp_path: Path) -> None:
    name = "m" * MAX_MODEL_NAME_LENGTH
    write_spec(tmp_path, f'[models.{name}]\ntrain = "x"\n')
    assert list(load_project(tmp_path).models) == [name]


@pytest.mark.parametrize(
    "value",
    ["[" * 100_000 + "]" * 100_000, "{a=" * 100_000 + "1" + "}" * 100_000],
    ids=["arrays", "inline-tables"],
)
def test_a_file_nested_too_deeply_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f"x = {value}\n")
    assert message.startswith(f"{tmp_path / 'watchkeeper.toml'}: "), message
    assert "nested too deeply" in message and "\n" not in message


def test_keep_data_defaults_come_from_the_data_table_and_models_override_them(
    tmp_path: Path,
) -> None:
    write_spec(
        tmp_path,
        '[data]\nkeep = "always"\nkeep_limit = "2G"\n\n'
        '[models.a]\ntrain = "true"\n\n[models.b]\ntrain = "true"\nkeep_data = "never"\n'
        "keep_data_limit = 1000\n",
    )
    project = load_project(tmp_path)
    assert (project.model("a").keep_data, project.model("a").keep_data_limit) == ("always", 2 << 30)
    assert (project.model("b").keep_data, project.model("b").keep_data_limit) == ("never", 1000)


def test_a_bad_keep_data_names_the_line_and_the_choices(tmp_path: Path) -> None:
    write_spec(tmp_path, '[models.a]\ntrain = "true"\nkeep_data = "sometimes"\n')
    with pytest.raises(WatchkeeperError, match=r"watchkeeper.toml:3: .*keep_data is 'sometimes'"):
        load_project(tmp_path)
    write_spec(tmp_path, '[data]\nkeep_limit = "lots"\n')
    with pytest.raises(WatchkeeperError, match=r"watchkeeper.toml:2: \[data\] keep_limit"):
        load_project(tmp_path)


def test_the_share_table_names_the_blob_store_and_its_mistakes_name_the_line(
    tmp_path: Path,
) -> None:
    write_spec(tmp_path, '[models.a]\ntrain = "true"\n\n[share]\nstore = "team"\n')
    assert load_project(tmp_path).share_store == "team"
    write_spec(tmp_path, '[models.a]\ntrain = "true"\n')
    assert load_project(tmp_path).share_store is None
    write_spec(tmp_path, '[share]\nstor = "team"\n')
    with pytest.raises(WatchkeeperError, match=r"watchkeeper.toml:2: .*stor.*store"):
        load_project(tmp_path)
    write_spec(tmp_path, "[share]\nstore = 3\n")
    with pytest.raises(WatchkeeperError, match=r"watchkeeper.toml:2: \[share\] store"):
        load_project(tmp_path)
