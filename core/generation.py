"""Batched, deterministic summarization with the loaded models.

Original and LoRA rows that share decoding settings run in *one* ``generate`` call as a
mixed-adapter batch (:func:`core.adapter_rows.adapter_rows`), so a comparison costs about two
model calls, not three. Every result carries its wall time and, for long inputs, how much of the
dialogue was cut to fit the model's input limit. A ``generate`` call can be given a time
budget (:class:`Deadline`): past it, the call returns what it has generated so far and the
summaries say they were cut (``timed_out``). On a CPU a batch's rows are encoded one at a time
at their own length (:func:`core.row_encoding.encode_rows_apart`); only decoding runs batched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from core.adapter_rows import adapter_rows, rows_per_thread
from core.config import MODEL_NAMES, GenerationSettings
from core.models import LoadedModel, ModelSet, available_cores, use_threads
from core.prompt import build_prompt, clean_text
from core.row_encoding import EncoderHandoff, OfferedRows, encode_rows_apart
from core.summaries import MAX_DIALOGUE_CHARS, MAX_INPUT_TOKENS, Summary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedInput:
    """A dialogue fitted to the input limit, with what was cut."""

    dialogue: str
    input_tokens: int
    truncated_tokens: int  # tokens of the (character-capped) dialogue that did not fit
    truncated_chars: int = 0  # characters dropped in all, counted on the cleaned text


def fit_dialogue(tokenizer: Any, dialogue: str, max_input_tokens: int = MAX_INPUT_TOKENS) -> PreparedInput:
    """Cut a dialogue so that its prompt fits ``max_input_tokens``, keeping the instruction.

    Truncating the whole prompt would drop the trailing "Summary:" the models were trained
    to answer; instead the dialogue's tail is dropped at a token boundary.
    """
    cleaned = clean_text(dialogue).strip()
    dialogue = cleaned[:MAX_DIALOGUE_CHARS]
    if not dialogue:
        raise ValueError("the dialogue is empty: paste a conversation or pick an example")
    total = len(tokenizer(build_prompt(dialogue))["input_ids"])
    if total <= max_input_tokens and len(dialogue) == len(cleaned):
        return PreparedInput(dialogue, total, 0)
    encoded = tokenizer(dialogue, add_special_tokens=False, return_offsets_mapping=True)
    overhead = total - len(encoded["input_ids"])
    budget = min(max(1, max_input_tokens - overhead), len(encoded["input_ids"]))
    cut_at = encoded["offset_mapping"][budget - 1][1]
    kept = dialogue[:cut_at].rstrip()
    kept_tokens = min(len(tokenizer(build_prompt(kept))["input_ids"]), max_input_tokens)
    return PreparedInput(kept, kept_tokens, total - kept_tokens, len(cleaned) - len(kept))


def effective_kwargs(loaded: LoadedModel, settings: GenerationSettings) -> dict[str, Any]:
    """The model's own decoding defaults overridden by the user's settings; never sampling."""
    kwargs = {**loaded.generation_defaults, **settings.as_generate_kwargs(), "do_sample": False}
    kwargs.setdefault("max_new_tokens", 200)
    if kwargs.get("num_beams", 1) == 1:
        kwargs.pop("early_stopping", None)
        kwargs.pop("length_penalty", None)
    if kwargs.get("min_new_tokens") and kwargs["min_new_tokens"] > kwargs["max_new_tokens"]:
        kwargs["min_new_tokens"] = kwargs["max_new_tokens"]
    return kwargs


class Deadline(StoppingCriteria):
    """Stops a ``generate`` call once ``seconds`` have passed since it was made, and remembers
    that it did (transformers' own ``max_time`` stops silently).

    Every sequence stops together, so beam search returns its best beams so far.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.fired = False

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        if not self.fired and time.monotonic() - self.start > self.seconds:
            self.fired = True
        return torch.full((input_ids.shape[0],), self.fired, device=input_ids.device, dtype=torch.bool)


# A batch pads every row to its longest dialogue, and on a CPU the encoder's cost is its FLOPs,
# padding included, while decoding is what a batch shares (each weight read once per token for
# all rows). So on a CPU each row is encoded alone at its own length and only decoding runs
# batched: a report's 24 dialogues x 3 models in batches of 8 took 27.7 s instead of 35.8 s,
# against 48.6 s one at a time (python -m bench: P4). A row's encoder states are then exactly
# those of a batch-1 call. On a GPU one padded call is faster, so it stays.
ENCODE_ROWS_APART = True


def _generate(
    group: Sequence[LoadedModel],
    prompts: list[str],
    kwargs: dict[str, Any],
    max_input_tokens: int,
    time_limit_s: float | None = None,
    handoff: EncoderHandoff | None = None,
) -> tuple[list[list[str]], bool]:
    """One ``generate`` call for every model in ``group`` (same module) over ``prompts``.

    Returns the texts per model and whether ``time_limit_s`` cut the call short. ``handoff``:
    rows (already offered) whose encoder states another worker computes.
    """
    head = group[0]
    encoded = head.tokenizer(
        prompts * len(group),
        return_tensors="pt",
        padding=True,
        truncation=True,
        max_length=max_input_tokens,
    ).to(head.device)
    extra: dict[str, Any] = {}
    adapter_names = (
        [m.adapter_name for m in group for _ in prompts] if head.adapter_name is not None else None
    )
    with head.lock, torch.inference_mode():
        use_threads(head)
        # The clock starts once the model is ours: waiting for the lock is not generating.
        deadline = Deadline(time_limit_s) if time_limit_s else None
        if deadline is not None:
            extra["stopping_criteria"] = StoppingCriteriaList([deadline])
        if ENCODE_ROWS_APART and head.device.type == "cpu" and len(encoded["input_ids"]) > 1:
            encoded = {
                "encoder_outputs": encode_rows_apart(head.model, encoded, adapter_names, handoff),
                "attention_mask": encoded["attention_mask"],
            }
        # Each row through its own adapter (peft's mixed-adapter batch, without its per-call hooks).
        with adapter_rows(head.model, adapter_names, kwargs.get("num_beams") or 1):
            output = head.model.generate(**encoded, **kwargs, **extra)
    texts = head.tokenizer.batch_decode(output, skip_special_tokens=True)
    n = len(prompts)
    cut = deadline is not None and deadline.fired
    return [[t.strip() for t in texts[i * n : (i + 1) * n]] for i in range(len(group))], cut


def plan_groups(models: Sequence[LoadedModel], settings: GenerationSettings) -> list[list[LoadedModel]]:
    """Group models that can share one generate call: same module and same decoding."""
    groups: list[list[LoadedModel]] = []
    for loaded in models:
        for group in groups:
            same_module = group[0].model is loaded.model and loaded.adapter_name is not None
            if same_module and effective_kwargs(group[0], settings) == effective_kwargs(loaded, settings):
                group.append(loaded)
                break
        else:
            groups.append([loaded])
    return groups


# Groups (the shared-base batch, the full model) run at the same time, one per free core: on a
# 2-core CPU with one intra-op thread per call, the full model's call on the second core hides
# behind the shared-base batch (python -m bench --only P2: 2.73 -> 1.69 near idle); with no free
# core they run one after another (``concurrent_workers``). Columns then arrive in the order their
# calls finish, which varies: callers key summaries by model, never by position (a test that
# compared two calls position by position is what once made them look non-deterministic).
CONCURRENT_GROUPS = True


def concurrent_workers(groups: int, cores: int | None = None, threads: int | None = None) -> int:
    """How many generate calls to run at once: one per group, as many as the cores hold at
    ``threads`` intra-op threads each (default: the calling thread's ``torch.get_num_threads()``);
    1 means one after another."""
    if cores is None:
        cores = available_cores()
    threads = threads if threads is not None else torch.get_num_threads()
    return max(1, min(groups, cores // max(1, threads)))


def configured_threads(models: Sequence[LoadedModel]) -> int | None:
    """The intra-op thread count the models' generate calls run with (``ARENA_THREADS``).

    Why not the calling thread's count: torch keeps it per OS thread, and a server thread
    started before the models loaded still has every core (see :func:`use_threads`), which
    would make concurrent groups look as if they did not fit. None when no model sets one (GPU).
    """
    return max((m.cpu_threads for m in models if m.cpu_threads is not None), default=None)


# A comparison's shared-base batch encodes two rows and the full model one; with both groups at
# once, the batch's LoRA row is encoded first on the full model's core, so the two finish closer
# together (python -m bench --only P2: see the README's Performance section).
HAND_OFF_ENCODER_ROWS = True


def plan_handoff(
    groups: Sequence[Sequence[LoadedModel]], dialogues: int
) -> tuple[int, int, EncoderHandoff] | None:
    """For two groups generating at once: (owner, helper, handoff) - the group with more rows
    hands its last rows' encoder passes, half the difference, to the other's worker. None when
    that does not apply: other group counts, equal rows, a GPU (rows encoded in one padded call),
    or a model whose adapter rows are not per thread (the helper runs without its lock)."""
    if not (HAND_OFF_ENCODER_ROWS and ENCODE_ROWS_APART) or len(groups) != 2:
        return None
    rows = [len(group) * dialogues for group in groups]
    owner = 0 if rows[0] >= rows[1] else 1
    count = (rows[owner] - rows[1 - owner] + 1) // 2
    head = groups[owner][0]
    if count < 1 or head.device.type != "cpu" or not rows_per_thread(head.model):
        return None
    return owner, 1 - owner, EncoderHandoff(range(rows[owner] - count, rows[owner]))


def offered_rows(
    group: Sequence[LoadedModel], prompts: Sequence[str], rows: Sequence[int], max_input_tokens: int
) -> OfferedRows:
    """The ids and adapters of ``rows`` of ``group``'s batch (laid out as :func:`_generate` does:
    every prompt for the first model, then for the next), tokenized as that batch is."""
    head = group[0]
    ids, names = {}, {}
    for row in rows:
        prompt, loaded = prompts[row % len(prompts)], group[row // len(prompts)]
        tokens = head.tokenizer(prompt, return_tensors="pt", truncation=True, max_length=max_input_tokens)
        ids[row], names[row] = tokens["input_ids"].to(head.device), loaded.adapter_name
    return OfferedRows(head, ids, names)


def _summarize_group(
    group: Sequence[LoadedModel],
    dialogues: Sequence[str],
    settings: GenerationSettings,
    max_input_tokens: int,
    time_limit_s: float | None,
    handoff: EncoderHandoff | None = None,
) -> list[list[Summary]]:
    """Every model of one group's summaries of ``dialogues`` (one ``generate`` call); failures
    become summaries with ``error`` set, never exceptions. ``handoff``: rows of the call that
    another worker may encode (offered here, before anything that can block)."""
    group_names = tuple(m.name for m in group)
    try:
        fitted = [fit_dialogue(group[0].tokenizer, d, max_input_tokens) for d in dialogues]
        kwargs = effective_kwargs(group[0], settings)
        start = time.perf_counter()
        prompts = [build_prompt(f.dialogue) for f in fitted]
        if handoff is not None:
            handoff.offer(offered_rows(group, prompts, handoff.rows, max_input_tokens))
        texts, cut = _generate(group, prompts, kwargs, max_input_tokens, time_limit_s, handoff=handoff)
        seconds = time.perf_counter() - start
    except ValueError as err:  # bad input: same message for every model
        return [[Summary(loaded.name, "", 0.0, error=str(err)) for _ in dialogues] for loaded in group]
    except Exception as err:
        logger.exception("generation failed for %s", ", ".join(group_names))
        message = f"generation failed: {type(err).__name__}: {err}"[:400]
        return [[Summary(loaded.name, "", 0.0, error=message) for _ in dialogues] for loaded in group]
    finally:
        if handoff is not None:
            handoff.withdraw()  # the helper waits for an offer: never leave it waiting
    return [
        [
            Summary(
                loaded.name,
                text,
                seconds,
                input_tokens=f.input_tokens,
                truncated_tokens=f.truncated_tokens,
                batched_with=tuple(n for n in group_names if n != loaded.name),
                truncated_chars=f.truncated_chars,
                timed_out=cut,
            )
            for text, f in zip(model_texts, fitted, strict=True)
        ]
        for loaded, model_texts in zip(group, texts, strict=True)
    ]


def summarize_many(
    model_set: ModelSet,
    dialogues: Sequence[str],
    settings: GenerationSettings,
    names: Sequence[str] = MODEL_NAMES,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    time_limit_s: float | None = None,
    concurrent: bool | None = None,
) -> Iterator[list[Summary]]:
    """Summarize ``dialogues`` with each named model; yield each model's list as it finishes.

    Models that can share a batch finish together. A model that failed to load, or fails
    while generating, yields summaries with ``error`` set; the others are unaffected. Each
    ``generate`` call may run ``time_limit_s`` seconds; a call cut there yields what it had,
    with ``timed_out`` set. With ``concurrent`` (default :data:`CONCURRENT_GROUPS`), groups run
    at the same time on free cores (:func:`concurrent_workers`) and are yielded in the order they
    finish; the summaries are the same either way.
    """
    settings.validate()
    available = [model_set.models[n] for n in names if n in model_set.models]
    for name in names:
        if name not in model_set.models:
            reason = model_set.errors.get(name, f"model {name!r} is not loaded")
            yield [Summary(name, "", 0.0, error=reason) for _ in dialogues]
    groups = plan_groups(available, settings)
    concurrent = CONCURRENT_GROUPS if concurrent is None else concurrent
    workers = concurrent_workers(len(groups), threads=configured_threads(available)) if concurrent else 1
    if workers == 1:
        for group in groups:
            yield from _summarize_group(group, dialogues, settings, max_input_tokens, time_limit_s)
        return

    plan = plan_handoff(groups, len(dialogues)) if workers == len(groups) else None
    owner, helper, handoff = plan if plan is not None else (None, None, None)

    def run(index: int) -> list[list[Summary]]:
        # Each call sets its own intra-op thread count (use_threads): a new thread may not have it.
        if index == helper:
            handoff.run()  # the other group's handed-over encoder rows first
        mine = handoff if index == owner else None
        return _summarize_group(groups[index], dialogues, settings, max_input_tokens, time_limit_s, mine)

    # Not a ``with`` block: a consumer that stops listening must not wait for the other calls.
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
    try:
        pending = [pool.submit(run, index) for index in range(len(groups))]
        for done in as_completed(pending):
            yield from done.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def summarize(
    model_set: ModelSet,
    dialogue: str,
    settings: GenerationSettings,
    names: Sequence[str] = MODEL_NAMES,
    time_limit_s: float | None = None,
) -> Iterator[Summary]:
    """Summarize one dialogue with each named model, yielding each result as it is ready."""
    for results in summarize_many(model_set, [dialogue], settings, names, time_limit_s=time_limit_s):
        yield results[0]


class BatchCache(Protocol):
    """Where :func:`summarize_all` finds and keeps summaries (the app's memory, a report's file)."""

    def get(self, key: Hashable) -> Summary | None: ...

    def put_many(self, items: Sequence[tuple[Hashable, Summary]]) -> None: ...


@dataclass
class BatchResult:
    """What :func:`summarize_all` produced: one text per dialogue and model, and what failed."""

    texts: dict[str, list[str]]  # "" where the model failed on that dialogue
    errors: dict[str, list[str]] = field(default_factory=dict)  # model -> its error messages
    cached: int = 0  # summaries found in the cache
    generated: int = 0  # summaries generated now
    seconds: float = 0.0  # wall time spent generating
    timed_out: int = 0  # summaries cut by the time budget (what was generated so far)


def summarize_all(
    model_set: ModelSet,
    dialogues: Sequence[str],
    settings: GenerationSettings,
    names: Sequence[str] = MODEL_NAMES,
    *,
    cache: BatchCache | None = None,
    key: Callable[[str, int], Hashable] | None = None,
    batch_size: int = 8,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    progress: Callable[[int, int], None] | None = None,
    time_limit_s: float | None = None,
) -> BatchResult:
    """Each named model's summary of every dialogue, generating only what ``cache`` lacks.

    ``key(model, i)`` names dialogue ``i``'s summary by ``model`` in ``cache``. Dialogues run in
    batches of ``batch_size``, sorted by length so that a batch holds little padding (python -m
    bench: P4); results keep the input order. Models whose missing dialogues coincide share a
    :func:`summarize_many` call (original and LoRA in one batch). New summaries go to the cache
    after each batch (a killed run keeps them), with ``seconds`` per dialogue; failures are not
    cached. ``progress(done, total)`` is called with 0 first and after each batch.
    ``time_limit_s`` bounds each ``generate`` call (:func:`summarize_many`); summaries it cut
    are kept but not cached, and counted in ``timed_out``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lookup = cache if cache is not None and key is not None else None
    result = BatchResult(texts={}, errors={})
    found: dict[str, list[str | None]] = {}
    for name in names:
        hits = [lookup.get(key(name, i)) if lookup is not None else None for i in range(len(dialogues))]
        found[name] = [hit.text if hit is not None else None for hit in hits]
        result.cached += sum(hit is not None for hit in hits)
    todo = sorted(
        (i for i in range(len(dialogues)) if any(found[n][i] is None for n in names)),
        key=lambda i: len(dialogues[i]),
    )
    if progress:
        progress(0, len(todo))
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        groups: dict[tuple[int, ...], list[str]] = {}
        for name in names:
            missing = tuple(i for i in batch if found[name][i] is None)
            if missing:
                groups.setdefault(missing, []).append(name)
        new: list[tuple[Hashable, Summary]] = []
        for indices, group in groups.items():
            begin = time.perf_counter()
            texts = [dialogues[i] for i in indices]
            for summaries in summarize_many(
                model_set, texts, settings, group, max_input_tokens, time_limit_s
            ):
                for i, summary in zip(indices, summaries, strict=True):
                    if summary.error is not None:
                        result.errors.setdefault(summary.model, []).append(summary.error)
                        found[summary.model][i] = ""
                        continue
                    found[summary.model][i] = summary.text
                    result.generated += 1
                    result.timed_out += summary.timed_out
                    if lookup is not None and not summary.timed_out:  # an empty cache is falsy
                        one = replace(summary, seconds=summary.seconds / len(indices))
                        new.append((key(summary.model, i), one))
            result.seconds += time.perf_counter() - begin
        if lookup is not None and new:
            lookup.put_many(new)
        if progress:
            progress(start + len(batch), len(todo))
    result.texts = {name: [t or "" for t in found[name]] for name in names}
    return result
