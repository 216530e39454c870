"""``python -m tokend.cli``: the same as the ``tokend`` command."""

from tokend.cli import main

main()
