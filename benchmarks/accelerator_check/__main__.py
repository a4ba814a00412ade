"""`python -m benchmarks.accelerator_check`: command.py has the options and the stages."""
import sys

from benchmarks.accelerator_check.command import main

if __name__ == "__main__":
    sys.exit(main())
