"""Backups: archives of the database, the vault key and the data folder; verify and restore.

``common`` (the format, the error, the list of archives, the last run's outcome), ``create``
(``levqor backup`` and the daily job), ``verify``, ``restore`` and ``status`` (the health
check's part). The click commands are in :mod:`levqor_host.cli.backup`. What runs against the
database itself lives in :mod:`levqor_host.store.maintenance`.
"""
