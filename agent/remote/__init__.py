"""Remote training: remotes, host keys, SSH connections, the upload cache and the executors."""
