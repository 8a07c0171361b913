"""`python -m seawall` runs the command line (`seawall.cli.main`)."""

from __future__ import annotations

from seawall.cli import main

if __name__ == "__main__":
    main()
