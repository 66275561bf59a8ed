"""``python -m train.full --help``: full fine-tuning (every weight trained) on DialogSum."""

from __future__ import annotations

import sys

from train.cli import main

if __name__ == "__main__":
    sys.exit(main("full"))
