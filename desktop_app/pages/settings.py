"""The Settings page: watched repos and data, remotes (add, test, trust), identities, notices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from agent.daemon import watchlist
from agent.errors import WatchkeeperError
from desktop_app.context import AppContext
from desktop_app.notifications import NotificationChoices
from desktop_app.pages import Page


def _buttons(*buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    for button in buttons:
        row.addWidget(button)
    row.addStretch()
    return row


def probe_host_key(name: str) -> dict[str, str]:
    """Connect to a remote's SSH server and read its host key (nothing is sent or trusted)."""
    from agent.remote.config import load_remote, target_for
    from agent.remote.connection import handshake
    from agent.remote.hostkeys import HostKeyStore, fingerprint

    target = target_for(load_remote(name))
    transport = handshake(target, HostKeyStore.default(), name, check=False, timeout=10.0)
    try:
        key = transport.get_remote_server_key()
        return {
            "host": target.known_hosts_name,
            "type": key.get_name(),
            "fingerprint": fingerprint(key),
            "key": key.get_base64(),
        }
    finally:
        transport.close()


def trust_host_key(name: str, expected_fingerprint: str) -> str:
    """Trust the remote's host key, but only if it still has the fingerprint the user saw."""
    from agent.remote.config import load_remote, target_for
    from agent.remote.connection import handshake
    from agent.remote.hostkeys import HostKeyStore, fingerprint

    target = target_for(load_remote(name))
    store = HostKeyStore.default()
    transport = handshake(target, store, name, check=False, timeout=10.0)
    try:
        key = transport.get_remote_server_key()
        if fingerprint(key) != expected_fingerprint:
            raise WatchkeeperError(
                f"the host key of {target.known_hosts_name} changed while you looked at it "
                f"(now {fingerprint(key)}); nothing was trusted."
            )
        store.trust(target.known_hosts_name, key)
        return fingerprint(key)
    finally:
        transport.close()


def test_remote(name: str) -> str:
    """Log in to a remote and run `uname -a` there; the host key must already be trusted."""
    from agent.remote.config import load_remote, target_for
    from agent.remote.connection import SshConnection

    connection = SshConnection.open(target_for(load_remote(name)), remote_name=name, timeout=10.0)
    try:
        return connection.run(["uname", "-a"], timeout=20).check("uname").text.strip()
    finally:
        connection.close()


class RemoteDialog(QDialog):
    """Fields of a new remote."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a remote")
        self.name = QLineEdit()
        self.host = QLineEdit()
        self.user = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(0, 65535)
        self.port.setSpecialValueText("default")
        self.kind = QComboBox()
        self.kind.addItems(["ssh", "slurm"])
        form = QFormLayout(self)
        form.addRow("&Name", self.name)
        form.addRow("&Host", self.host)
        form.addRow("&User", self.user)
        form.addRow("&Port", self.port)
        form.addRow("&Kind", self.kind)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def values(self) -> dict[str, Any]:
        return {
            "name": self.name.text().strip(),
            "host": self.host.text().strip(),
            "user": self.user.text().strip() or None,
            "port": self.port.value() or None,
            "kind": self.kind.currentText(),
        }


class SettingsPage(Page):
    """Everything a user sets up from the app."""

    title = "Settings"

    def __init__(self, context: AppContext) -> None:
        super().__init__(context)
        self.repos = QListWidget()
        self.repos.setAccessibleName("Watched repos")
        self.data = QListWidget()
        self.data.setAccessibleName("Watched data folders")
        add_repo = QPushButton("Add &repo…")
        add_repo.clicked.connect(lambda: self.choose_and_add(data=False))
        add_data = QPushButton("Add &data folder…")
        add_data.clicked.connect(lambda: self.choose_and_add(data=True))
        remove_repo = QPushButton("Remove")
        remove_repo.clicked.connect(lambda: self.remove_selected(self.repos))
        remove_data = QPushButton("Remove")
        remove_data.clicked.connect(lambda: self.remove_selected(self.data))

        watched = QGroupBox("Watched repos and data")
        watched_layout = QVBoxLayout(watched)
        watched_layout.addWidget(self.repos)
        watched_layout.addLayout(_buttons(add_repo, remove_repo))
        watched_layout.addWidget(self.data)
        watched_layout.addLayout(_buttons(add_data, remove_data))

        self.remotes = QListWidget()
        self.remotes.setAccessibleName("Remotes")
        add_remote = QPushButton("&Add…")
        add_remote.clicked.connect(self.add_remote)
        self.test_button = QPushButton("&Test")
        self.test_button.clicked.connect(self.test_selected_remote)
        self.trust_button = QPushButton("Tr&ust host key…")
        self.trust_button.clicked.connect(self.trust_selected_remote)
        remove_remote = QPushButton("Remove")
        remove_remote.clicked.connect(self.remove_remote)
        remotes = QGroupBox("Remotes")
        remotes_layout = QVBoxLayout(remotes)
        remotes_layout.addWidget(self.remotes)
        remotes_layout.addLayout(
            _buttons(add_remote, self.test_button, self.trust_button, remove_remote)
        )

        self.identities = QListWidget()
        self.identities.setAccessibleName("Your email addresses")
        self.identity_edit = QLineEdit()
        self.identity_edit.setPlaceholderText("you@example.com")
        self.identity_edit.returnPressed.connect(self.add_identity)
        add_identity = QPushButton("Add")
        add_identity.clicked.connect(self.add_identity)
        remove_identity = QPushButton("Remove")
        remove_identity.clicked.connect(self.remove_identity)
        identities = QGroupBox("Identities (your commit emails)")
        identities_layout = QVBoxLayout(identities)
        identities_layout.addWidget(self.identities)
        row = QHBoxLayout()
        row.addWidget(self.identity_edit, 1)
        row.addWidget(add_identity)
        row.addWidget(remove_identity)
        identities_layout.addLayout(row)

        self.notify_stale = QCheckBox("A model goes &stale")
        self.notify_runs = QCheckBox("A run &finishes or fails")
        self.notify_drift = QCheckBox("Data &drift is found")
        self.notify_daily = QCheckBox("Daily coding-time summary at")
        self.daily_hour = QSpinBox()
        self.daily_hour.setRange(0, 23)
        self.daily_hour.setSuffix(":00")
        for control in (self.notify_stale, self.notify_runs, self.notify_drift, self.notify_daily):
            control.toggled.connect(self.save_notifications)
        self.daily_hour.valueChanged.connect(self.save_notifications)
        notifications = QGroupBox("Notify me when")
        notifications_layout = QVBoxLayout(notifications)
        for control in (self.notify_stale, self.notify_runs, self.notify_drift):
            notifications_layout.addWidget(control)
        daily = QHBoxLayout()
        daily.addWidget(self.notify_daily)
        daily.addWidget(self.daily_hour)
        daily.addStretch()
        notifications_layout.addLayout(daily)
        notifications_layout.addStretch()

        grid = QGridLayout(self)
        grid.addWidget(watched, 0, 0)
        grid.addWidget(remotes, 0, 1)
        grid.addWidget(identities, 1, 0)
        grid.addWidget(notifications, 1, 1)
        self._loading = False

    # ---------------------------------------------------------------- loading

    def refresh(self) -> None:
        try:
            config = self.context.load_config()
        except (WatchkeeperError, ValueError) as error:
            self.context.show_status(str(error))
            return
        self._loading = True
        self.repos.clear()
        self.repos.addItems(config.watched_repos)
        self.data.clear()
        self.data.addItems(config.watched_data)
        self.remotes.clear()
        for name, table in sorted(config.section("remotes").items()):
            where = table.get("host", "?") if isinstance(table, dict) else "?"
            kind = table.get("kind", "ssh") if isinstance(table, dict) else "ssh"
            self.remotes.addItem(f"{name} — {kind} on {where}")
        self.identities.clear()
        self.identities.addItems(config.identity_emails)
        choices = NotificationChoices.from_config(config)
        self.notify_stale.setChecked(choices.stale)
        self.notify_runs.setChecked(choices.runs)
        self.notify_drift.setChecked(choices.drift)
        self.notify_daily.setChecked(choices.daily_summary)
        self.daily_hour.setValue(choices.daily_summary_hour)
        self._loading = False

    # ---------------------------------------------------------------- watched folders

    def choose_and_add(self, *, data: bool) -> None:
        what = "data folder" if data else "repository"
        folder = QFileDialog.getExistingDirectory(self, f"Watch a {what}", str(Path.home()))
        if folder:
            self.add_watch(folder, data=data)

    def add_watch(self, path: str, *, data: bool) -> None:
        """Watch a folder: through the agent when it runs, else written to config.toml."""
        if self.context.agent.connected:

            def watching(_result: object) -> None:
                self.context.show_status(f"Watching {path}")
                self.refresh()

            self.context.agent.call(
                "watch_add",
                {"path": path, "data": data},
                on_result=watching,
                on_error=lambda message: self._error(f"Cannot watch {path}", message),
            )
            return
        try:
            watchlist.add_watch(path, data=data, config=self.context.load_config())
        except WatchkeeperError as error:
            self._error(f"Cannot watch {path}", str(error))
            return
        self.context.show_status(f"{path} added; the agent watches it when it runs.")
        self.refresh()

    def remove_selected(self, source: QListWidget) -> None:
        item = source.currentItem()
        if item is None:
            return
        path = item.text()
        if self.context.agent.connected:
            self.context.agent.call(
                "watch_remove",
                {"path": path},
                on_result=lambda _r: self.refresh(),
                on_error=lambda message: self._error(f"Cannot stop watching {path}", message),
            )
            return
        try:
            watchlist.remove_watch(path, config=self.context.load_config())
        except WatchkeeperError as error:
            self._error(f"Cannot stop watching {path}", str(error))
        self.refresh()

    # ---------------------------------------------------------------- remotes

    def selected_remote(self) -> str | None:
        item = self.remotes.currentItem()
        return item.text().split(" — ")[0] if item is not None else None

    def add_remote(self) -> None:
        dialog = RemoteDialog(self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        self.save_remote(**dialog.values())

    def save_remote(
        self, name: str, host: str, user: str | None, port: int | None, kind: str
    ) -> None:
        """Write [remotes.NAME] through the remote library (which validates every field)."""
        from agent.remote.config import RemoteConfig, save_remote

        try:
            save_remote(
                RemoteConfig.from_table(
                    name,
                    {
                        k: v
                        for k, v in {"host": host, "user": user, "port": port, "kind": kind}.items()
                        if v is not None
                    },
                    self.context.paths.config,
                ),
                self.context.load_config(),
            )
        except (WatchkeeperError, ValueError) as error:
            self._error(f"Cannot add remote {name!r}", str(error))
            return
        self.context.show_status(f"Remote {name} added; trust its host key before using it.")
        self.refresh()

    def remove_remote(self) -> None:
        from agent.remote.config import remove_remote

        name = self.selected_remote()
        if name is None:
            return
        try:
            remove_remote(name, self.context.load_config())
        except WatchkeeperError as error:
            self._error(f"Cannot remove {name}", str(error))
        self.refresh()

    def test_selected_remote(self) -> None:
        name = self.selected_remote()
        if name is None:
            return
        self.context.show_status(f"Testing {name}…")
        self.context.workers.submit(
            lambda _c: test_remote(name),
            lambda text: self.context.show_status(f"{name} answers: {text}"),
            lambda message: self._error(f"{name} did not answer", message),
            with_ledger=False,
        )

    def trust_selected_remote(self) -> None:
        """Show the server's host key fingerprint and trust it only when the user agrees."""
        name = self.selected_remote()
        if name is None:
            return
        self.context.show_status(f"Reading the host key of {name}…")
        self.context.workers.submit(
            lambda _c: probe_host_key(name),
            lambda key: self._confirm_trust(name, key),
            lambda message: self._error(f"Cannot reach {name}", message),
            with_ledger=False,
        )

    def _confirm_trust(self, name: str, key: dict[str, str]) -> None:
        answer = QMessageBox.question(
            self,
            f"Trust {name}?",
            f"The server {key['host']} presents this {key['type']} host key:\n\n"
            f"{key['fingerprint']}\n\nCompare it with the fingerprint the server's owner gave "
            "you (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the server). Trust it?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.context.workers.submit(
            lambda _c: trust_host_key(name, key["fingerprint"]),
            lambda fp: self.context.show_status(f"Trusted {name}: {fp}"),
            lambda message: self._error(f"Did not trust {name}", message),
            with_ledger=False,
        )

    # ---------------------------------------------------------------- identities

    def add_identity(self) -> None:
        email = self.identity_edit.text().strip()
        if "@" not in email:
            self.context.show_status("An identity is an email address, like you@example.com.")
            return
        config = self.context.load_config()
        emails = config.identity_emails
        if email not in emails:
            config.set("identity", "emails", [*emails, email])
            config.save()
        self.identity_edit.clear()
        self.refresh()

    def remove_identity(self) -> None:
        item = self.identities.currentItem()
        if item is None:
            return
        config = self.context.load_config()
        config.set("identity", "emails", [e for e in config.identity_emails if e != item.text()])
        config.save()
        self.refresh()

    # ---------------------------------------------------------------- notifications

    def save_notifications(self) -> None:
        if self._loading:
            return
        NotificationChoices(
            stale=self.notify_stale.isChecked(),
            runs=self.notify_runs.isChecked(),
            drift=self.notify_drift.isChecked(),
            daily_summary=self.notify_daily.isChecked(),
            daily_summary_hour=self.daily_hour.value(),
        ).save(self.context.load_config())

    def _error(self, title: str, message: str) -> None:
        self.context.show_status(f"{title}: {message}")
