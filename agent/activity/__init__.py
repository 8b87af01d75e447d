"""Developer activity: commits read from git, file-save events, identities and reports."""
