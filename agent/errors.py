"""The error type the CLI shows to users: it names the file, line or field and the fix."""


class WatchkeeperError(Exception):
    """A problem the user can fix; the CLI prints the message and exits with status 2.

    >>> raise WatchkeeperError("watchkeeper.toml:3: unknown key 'trian'; did you mean 'train'?")
    Traceback (most recent call last):
    ...
    agent.errors.WatchkeeperError: watchkeeper.toml:3: unknown key 'trian'; did you mean 'train'?
    """

    exit_code = 2
