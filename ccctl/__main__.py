"""Allow ``python -m ccctl``."""

from ccctl.cli import main

main()
