"""``python -m levqor_host.cli``: the ``levqor`` command."""

from levqor_host.cli import main

main()
