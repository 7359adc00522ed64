"""Exits before registering."""

import sys

sys.stderr.write("quitter: cannot start\n")
sys.exit(2)
