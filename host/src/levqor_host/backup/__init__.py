"""Backups: archives of the database, the vault key and the data folder; verify and restore."""
