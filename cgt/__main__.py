"""`python -m cgt ...`: the command line (cgt/cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
