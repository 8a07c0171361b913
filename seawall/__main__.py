"""`python -m seawall` runs the command line."""

from seawall.cli import main

if __name__ == "__main__":
    main()
