"""Encoder states for each row of a batch at the row's own length (CPU batches, :mod:`core.generation`).

A batch pads every row to its longest dialogue; on a CPU the encoder's cost is its FLOPs, padding
included, so each row is encoded alone and only decoding runs batched. Some rows can be handed to
another worker (:class:`EncoderHandoff`), which encodes them while the batch's own worker encodes
the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutput

from core.adapter_rows import adapter_rows
from core.models import LoadedModel, use_threads

logger = logging.getLogger(__name__)

# How long a helper waits for its owner's offer. The owner offers right after tokenizing (a few
# milliseconds), so this only bounds a helper whose owner never ran: it then just skips the rows.
OFFER_WAIT_S = 10.0


def encode_row(model: Any, ids: torch.Tensor, adapter_name: str | None) -> torch.Tensor:
    """The encoder's states for one unpadded row ``ids`` (shape ``(1, length)``) through
    ``adapter_name`` (None: a model without adapters); shape ``(1, length, hidden)``."""
    with adapter_rows(model, None if adapter_name is None else [adapter_name]):
        return model.get_encoder()(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


@dataclass(frozen=True)
class OfferedRows:
    """What a batch's worker hands over: the rows' token ids and adapters, on which model."""

    loaded: LoadedModel  # the batch's model (encoded at its intra-op thread count)
    ids: dict[int, torch.Tensor]  # batch row -> its unpadded ids, shape (1, length)
    adapter_names: dict[int, str | None]


class EncoderHandoff:
    """Rows of one batch whose encoder states another worker computes while the batch's own
    worker encodes the rest (python -m bench: P2).

    A comparison runs the shared-base batch (original + LoRA: two encoder passes, two rows
    decoded) and the full model (one of each) at the same time, one core each, and the batch
    finishes last; its LoRA row encoded first on the full model's core evens the two out.

    The owner offers the rows (:meth:`offer`, or :meth:`withdraw`: nothing to hand over), encodes
    its others, then calls :meth:`collect`; the helper calls :meth:`run` before its own work. The
    owner takes back any row the helper has not started, and the helper waits only for the offer,
    which the owner makes before anything that can block: neither waits on a worker that is not
    coming. Only for models whose adapter rows are per thread (:func:`core.adapter_rows.rows_per_thread`):
    the helper encodes without the model's lock.
    """

    def __init__(self, rows: Sequence[int]) -> None:
        self.rows = tuple(rows)
        self._offer: Future[OfferedRows | None] = Future()
        self._states: Future[dict[int, tuple[torch.Tensor, torch.Tensor]] | None] = Future()
        self._started = False
        self._lock = threading.Lock()

    def offer(self, rows: OfferedRows) -> None:
        """Owner: hand over :attr:`rows` (their ids and adapters)."""
        if not self._offer.done():
            self._offer.set_result(rows)

    def withdraw(self) -> None:
        """Owner: nothing to hand over (bad input, a failed call); a no-op after :meth:`offer`."""
        if not self._offer.done():
            self._offer.set_result(None)

    def _start(self) -> bool:
        with self._lock:
            started, self._started = self._started, True
            return not started

    def run(self) -> None:
        """Helper: wait for the offer (at most :data:`OFFER_WAIT_S`), then encode its rows unless
        the owner took them back. Never raises: on a failure the owner encodes the rows itself."""
        try:
            offered = self._offer.result(timeout=OFFER_WAIT_S)
        except futures.TimeoutError:  # the builtin TimeoutError only from Python 3.11
            logger.warning("no rows offered within %.0f s; their own worker encodes them", OFFER_WAIT_S)
            return
        if offered is None or not self._start():
            return
        states = None
        try:
            use_threads(offered.loaded)
            with torch.inference_mode():
                states = {
                    row: (ids, encode_row(offered.loaded.model, ids, offered.adapter_names[row]))
                    for row, ids in offered.ids.items()
                }
        except Exception:
            logger.exception("encoding handed-over rows failed; their own worker encodes them")
        finally:
            self._states.set_result(states)  # the owner waits for this once the helper started

    def collect(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]] | None:
        """Owner: once the helper has them, row -> (the ids it encoded, their states); None at
        once when the helper has not started, or failed (the owner encodes the rows itself)."""
        if self._start():
            return None
        return self._states.result()


def encode_rows_apart(
    model: Any,
    encoded: Mapping[str, torch.Tensor],
    adapter_names: Sequence[str] | None,
    handoff: EncoderHandoff | None = None,
) -> BaseModelOutput:
    """The encoder's states for each row of ``encoded``, computed at the row's own length.

    The result has ``encoded``'s padded shape, zeros where the attention mask is 0 (the decoder
    never attends there). ``adapter_names`` (one per row) picks each row's peft adapter. Rows of
    ``handoff`` (already offered) come from its helper, if it encoded exactly these ids.
    """
    mask = encoded["attention_mask"].bool()
    rows = [encoded["input_ids"][row][mask[row]].unsqueeze(0) for row in range(mask.shape[0])]
    names: list[str | None] = list(adapter_names) if adapter_names is not None else [None] * len(rows)
    handed = set(handoff.rows) if handoff is not None else set()
    hidden = {row: encode_row(model, rows[row], names[row]) for row in range(len(rows)) if row not in handed}
    helped = (handoff.collect() if handoff is not None else None) or {}
    for row in sorted(handed):
        ids, state = helped.get(row, (None, None))
        same_ids = ids is not None and torch.equal(ids, rows[row])  # else the owner's own
        hidden[row] = state if same_ids else encode_row(model, rows[row], names[row])
    first = next(iter(hidden.values()))
    states = first.new_zeros(mask.shape[0], mask.shape[1], first.shape[-1])
    for row, state in hidden.items():
        states[row, mask[row]] = state[0]
    return BaseModelOutput(last_hidden_state=states)
