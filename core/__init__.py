"""dialogue-summary arena core: data, prompts, models, generation, metrics, evaluation, votes.

Nothing in this package imports gradio; the UI lives in ``app.py``.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
