"""``python -m bridge``: the same as the ``bridge`` command."""

from bridge.cli import main

main()
