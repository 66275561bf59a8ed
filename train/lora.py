"""``python -m train.lora --help``: LoRA fine-tuning (a small adapter on a frozen base) on DialogSum."""

from __future__ import annotations

import sys

from train.cli import main

if __name__ == "__main__":
    sys.exit(main("lora"))
