"""The example project `watchkeeper demo` writes: a git repo with data, a NumPy model and a spec."""

from __future__ import annotations

import csv
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent import __version__
from agent.errors import WatchkeeperError

MARKER = ".watchkeeper-demo"
MARKER_SIGNATURE = "written by `watchkeeper demo`"
MODEL = "churn"
DATA_FILE = "data/customers.csv"
ROWS = 400
SEED = 20240601
CONTRACTS = ("month-to-month", "one-year", "two-year")
REGIONS = ("north", "south", "east", "west")
DEMO_IDENTITY = {"user.name": "Watchkeeper demo", "user.email": "demo@watchkeeper.invalid"}

TRAIN_SCRIPT = '''\
"""Fit a logistic regression of churn by gradient descent in NumPy; write the model and metrics."""

import csv
import json
import os
import pickle

import numpy as np

NUMERIC = ["tenure_months", "monthly_charges", "support_calls"]
CATEGORICAL = {"contract": ["month-to-month", "one-year", "two-year"],
               "region": ["north", "south", "east", "west"]}
DEFAULT_PARAMS = {"lr": 0.5, "epochs": 300, "holdout": 0.25}

params = {**DEFAULT_PARAMS, **json.load(open(os.environ["WK_PARAMS"]))} if os.environ.get(
    "WK_PARAMS") else DEFAULT_PARAMS
with open("data/customers.csv", newline="") as handle:
    rows = list(csv.DictReader(handle))
print(f"read {len(rows)} rows of data/customers.csv", flush=True)

numeric = np.array([[float(row[name]) for name in NUMERIC] for row in rows])
means, stds = numeric.mean(axis=0), numeric.std(axis=0) + 1e-9
columns = [(numeric - means) / stds]
names = list(NUMERIC)
for column, levels in CATEGORICAL.items():
    columns.append(np.array([[row[column] == level for level in levels[1:]] for row in rows],
                            dtype=float))
    names += [f"{column}={level}" for level in levels[1:]]
features = np.hstack([np.ones((len(rows), 1)), *columns])
names = ["intercept", *names]
labels = np.array([float(row["churned"]) for row in rows])

order = np.random.default_rng(0).permutation(len(rows))
n_test = int(len(rows) * float(params["holdout"]))
test, train = order[:n_test], order[n_test:]

weights = np.zeros(features.shape[1])
for epoch in range(1, int(params["epochs"]) + 1):
    predicted = 1.0 / (1.0 + np.exp(-features[train] @ weights))
    weights -= float(params["lr"]) * features[train].T @ (predicted - labels[train]) / len(train)
    if epoch % 100 == 0 or epoch == 1:
        loss = -np.mean(labels[train] * np.log(predicted + 1e-12)
                        + (1 - labels[train]) * np.log(1 - predicted + 1e-12))
        print(f"epoch {epoch}: train log loss {loss:.4f}", flush=True)

probability = 1.0 / (1.0 + np.exp(-features[test] @ weights))
truth = labels[test]
accuracy = float(np.mean((probability >= 0.5) == truth))
log_loss = float(-np.mean(truth * np.log(probability + 1e-12)
                          + (1 - truth) * np.log(1 - probability + 1e-12)))
ranks = np.argsort(np.argsort(probability)) + 1
positives = truth.sum()
auc = float((ranks[truth == 1].sum() - positives * (positives + 1) / 2)
            / max(positives * (len(truth) - positives), 1))

model = {"features": names, "weights": weights.tolist(), "means": means.tolist(),
         "stds": stds.tolist(), "numeric": NUMERIC, "categorical": CATEGORICAL}
with open("model.json", "w") as handle:
    json.dump(model, handle, indent=2)
with open("model.pkl", "wb") as handle:
    pickle.dump(model, handle)
metrics = {"accuracy": accuracy, "auc": auc, "log_loss": log_loss, "rows": len(rows)}
with open("metrics.json", "w") as handle:
    json.dump(metrics, handle)
print("metrics", json.dumps(metrics), flush=True)
'''

SPEC = """\
# The demo project written by `watchkeeper demo`: one model, `churn`, trained on a CSV file.
# `watchkeeper status` says whether its newest version is fresh or stale; change
# data/customers.csv or train.py and it says why. `watchkeeper demo --remove` deletes all this.
[models.churn]
train = "{python} train.py"   # the Python that runs Watchkeeper (it has NumPy)
deps = ["train.py", "{data}"]   # code (in git) and data (git-ignored)
outs = ["model.pkl", "model.json"]
metrics = "metrics.json"
params = {{ lr = 0.5, epochs = 300, holdout = 0.25 }}
on_stale = "notify"
"""

README = f"""\
# churn-demo

An example project written by `watchkeeper demo`. `train.py` fits a logistic regression of
`churned` on the other columns of `{DATA_FILE}` ({ROWS} made-up customers) with NumPy and
writes `model.pkl`, `model.json` and `metrics.json`. `watchkeeper.toml` declares the model.

The data file is git-ignored, as data usually is: Watchkeeper fingerprints it instead.

    watchkeeper status                # is churn fresh?
    echo "36,80.5,4,month-to-month,east,1" >> {DATA_FILE}
    watchkeeper status                # stale: data changed in {DATA_FILE}
    watchkeeper train churn           # a new version, fresh again
    watchkeeper demo --remove         # delete this folder and forget it
"""

GITIGNORE = "data/\nmodel.pkl\nmodel.json\nmetrics.json\n"


@dataclass(frozen=True)
class DemoProject:
    """Where the demo project lives and the files a user may want to touch."""

    root: Path

    @property
    def data_file(self) -> Path:
        return self.root / DATA_FILE

    @property
    def marker(self) -> Path:
        return self.root / MARKER


def is_demo_project(root: Path) -> bool:
    """True when `root` holds the marker that `write_demo_project` leaves."""
    marker = root / MARKER
    try:
        return marker.is_file() and MARKER_SIGNATURE in marker.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def customer_rows(
    count: int = ROWS, seed: int = SEED, *, charges_mean: float = 65.0, calls_rate: float = 1.5
) -> list[dict[str, object]]:
    """Made-up customers whose churn depends on tenure, charges, support calls and contract.

    >>> rows = customer_rows(3)
    >>> sorted(rows[0])
    ['churned', 'contract', 'monthly_charges', 'region', 'support_calls', 'tenure_months']
    >>> rows == customer_rows(3)
    True
    """
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 73, size=count)
    charges = np.round(rng.normal(charges_mean, 20.0, size=count).clip(15.0, 160.0), 2)
    calls = rng.poisson(calls_rate, size=count)
    contract = rng.choice(len(CONTRACTS), size=count, p=[0.55, 0.25, 0.20])
    region = rng.choice(len(REGIONS), size=count)
    logit = 0.5 - 0.06 * tenure + 0.025 * (charges - 65.0) + 0.55 * calls - 1.2 * contract
    churned = rng.random(count) < 1.0 / (1.0 + np.exp(-logit))
    return [
        {
            "tenure_months": int(tenure[i]),
            "monthly_charges": float(charges[i]),
            "support_calls": int(calls[i]),
            "contract": CONTRACTS[contract[i]],
            "region": REGIONS[region[i]],
            "churned": int(churned[i]),
        }
        for i in range(count)
    ]


def write_customers(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_demo_project(root: Path) -> DemoProject:
    """Write the demo project into `root` (missing or empty) and commit it with real git.

    Refuses a folder that exists and holds anything: the demo never writes over a user's files.
    """
    if root.exists() and not root.is_dir():
        raise WatchkeeperError(f"{root} is a file; give `watchkeeper demo` a folder path.")
    if root.is_dir() and any(root.iterdir()):
        raise WatchkeeperError(
            f"{root} exists and is not empty, and it is not a demo project; choose another "
            "folder: `watchkeeper demo PATH`."
        )
    git = shutil.which("git")
    if git is None:
        raise WatchkeeperError("git is not installed; install it (e.g. `apt-get install git`).")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WatchkeeperError(f"cannot create {root} ({error.strerror}).") from error
    project = DemoProject(root)
    files = {
        "train.py": TRAIN_SCRIPT,
        "watchkeeper.toml": SPEC.format(python=shlex.quote(sys.executable), data=DATA_FILE),
        "README.md": README,
        ".gitignore": GITIGNORE,
        MARKER: json.dumps(
            {"note": MARKER_SIGNATURE, "version": __version__, "created_at": time.time()}
        )
        + "\n",
    }
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    write_customers(project.data_file, customer_rows())
    _git(root, "init", "-q")
    for key, value in DEMO_IDENTITY.items():
        if not _git(root, "config", "--get", key, check=False):
            _git(root, "config", "--local", key, value)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "Demo project: churn model, its training script and spec")
    return project


def append_customers(data_file: Path, count: int = 80, seed: int = SEED + 1) -> int:
    """Append `count` new customers who pay more and call support more often than the first
    ones: a change under the model, with drift in two columns."""
    rows = customer_rows(count, seed, charges_mean=95.0, calls_rate=3.0)
    with open(data_file, "a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerows(rows)
    return count


def _git(root: Path, *args: str, check: bool = True) -> str:
    completed = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    if check and completed.returncode != 0:
        raise WatchkeeperError(
            f"`git {' '.join(args)}` failed in {root}: {completed.stderr.strip()}"
        )
    return completed.stdout.strip()
