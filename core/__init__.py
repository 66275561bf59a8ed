"""dialogue-summary arena core: data, prompts, models, generation, metrics, evaluation, votes.

Nothing in this package imports gradio; the UI lives in ``app.py``.
"""

from __future__ import annotations

import os

__all__ = ["ONEDNN_CACHE_VARIABLES", "ONEDNN_SHAPE_CACHE_ENTRIES", "__version__"]
__version__ = "0.1.0"

# oneDNN, which runs the CPU's bf16 matrix products, keeps what it builds for each new input shape
# in two caches of 1,024 entries (its primitives', and ideep's in torch). Dialogues come in every
# length, so without a bound a served model grew ~3.8 MB per new dialogue length (+755 MB after
# 200 test dialogues, one model) and a LoRA run on a bf16 base peaked 0.85 GB higher. 16 entries
# still hold what a generate call reuses at every token (its cross-attention shapes). Both caches
# read their variable at the first bf16 product, so it is set here, before any code of this
# package runs one; a value set before Python starts wins.
ONEDNN_SHAPE_CACHE_ENTRIES = 16
ONEDNN_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
for _variable in ONEDNN_CACHE_VARIABLES:
    os.environ.setdefault(_variable, str(ONEDNN_SHAPE_CACHE_ENTRIES))
