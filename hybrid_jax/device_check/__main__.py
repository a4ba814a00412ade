"""`python -m hybrid_jax.device_check`: command.py has the options and the stages."""
import sys

from hybrid_jax.device_check.command import main

if __name__ == "__main__":
    sys.exit(main())
