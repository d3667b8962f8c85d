"""``python -m streams.cli`` is ``paybus``."""

from streams.cli import main

main()
