"""Hostile and broken input: a clear message or a correct answer, never a crash (issue 6).

Three layers, each with the same matrix of inputs: the service in-process (fast, exhaustive),
the running app through its HTTP API (what a client really sends, including JSON escapes a
Python client can't produce), and a real browser (pasted HTML must stay text). A last part
checks that no user input ever reaches the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.load import Rejected, call
from core import presentation as view
from core.battles import BattleStore
from core.config import MODEL_NAMES, load_config
from core.models import load_model_set
from core.presentation import truncation_notice
from core.service import ArenaService, InputError, ModelResult
from core.summaries import MAX_DIALOGUE_CHARS, MAX_INPUT_TOKENS
from core.votes import VoteStore

XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
HOSTILE_TEXT = {
    "html-and-script": f"#Person1#: {XSS}\n#Person2#: <b>bold</b> <a href='javascript:alert(1)'>x</a>",
    "emoji": "#Person1#: 🎉🎂 party tonight? 👍🏽\n#Person2#: 😀 yes! 👨‍👩‍👧",
    "right-to-left": "#Person1#: مرحبا، كيف حالك؟\n#Person2#: שלום, אני בסדר \u202eoverride\u202c",
    "control-and-nul": "#Person1#: hi\x00there\x07\x1b[31m red\x08\n#Person2#: ok\x7f\x85\u2028 bye\ufeff",
    "markdown": "#Person1#: ![img](http://example.invalid/x.png) [link](javascript:alert(1)) **b** `c`",
    "sql-ish": "#Person1#: '; DROP TABLE votes; --\n#Person2#: \" OR 1=1 --",
}
PATHS = (
    "../../../../etc/passwd",
    "/etc/passwd",
    "~/.ssh/id_rsa",
    "..\\..\\windows\\win.ini",
    "file:///etc/shadow",
)
SHORT = 8  # summary tokens: these tests are about input handling, not summaries


@pytest.fixture(scope="module")
def service(
    tiny_checkpoints: dict[str, str], data_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> ArenaService:
    root = tmp_path_factory.mktemp("bad-input")
    config = load_config(
        {"ARENA_CHECKPOINTS": str(root / "checkpoints")},
        preset="mini", data=data_dir, device="cpu", max_new_tokens=SHORT,
        votes_db=str(root / "votes.sqlite"), **tiny_checkpoints,
    )  # fmt: skip
    return ArenaService(config, load_model_set(config))


# ---------------------------------------------------------------------------- dialogue and reference


@pytest.mark.parametrize(
    "dialogue", ["", "   ", " \n\t \r\n ", "\x00\x00", "\x01\x1b\x7f", "\ud800\udfff", None]
)
def test_empty_dialogue_is_refused_with_a_clear_message(service: ArenaService, dialogue) -> None:
    with pytest.raises(InputError, match="dialogue is empty"):
        service.compare(dialogue, "")


@pytest.mark.parametrize("dialogue", [12345, 1.5, ["#Person1#: hi"], {"dialogue": "x"}, b"bytes"])
def test_dialogue_that_is_not_text_is_refused(service: ArenaService, dialogue) -> None:
    with pytest.raises(InputError, match="must be text"):
        service.compare(dialogue, "")


@pytest.mark.parametrize("case", list(HOSTILE_TEXT))
def test_hostile_text_is_summarized_like_any_dialogue(service: ArenaService, case: str) -> None:
    text = HOSTILE_TEXT[case]
    result = service.compare(text, text)  # the same text as reference: scored, not executed
    for name in MODEL_NAMES:
        column = result["models"][name]
        assert column["error"] is None, column
        assert "\x00" not in column["summary"]
        assert column["rouge"] is not None  # a reference was given
    json.dumps(result, allow_nan=False)  # what the API sends must be plain JSON


def test_lone_surrogates_from_json_escapes_are_dropped(service: ArenaService) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate, which the tokenizers refuse outright."""
    text = json.loads('"#Person1#: hi \\ud800 there \\udfff\\n#Person2#: ok"')
    result = service.compare(text, json.loads('"hi \\udc00 there"'))
    assert all(result["models"][n]["error"] is None for n in MODEL_NAMES)
    result["models"]["original"]["summary"].encode("utf-8")  # nothing unencodable comes back


def test_a_100000_character_dialogue_is_cut_to_the_input_limit_with_a_notice(service: ArenaService) -> None:
    turns = [
        f"#Person{1 + i % 2}#: line {i} of a very long conversation about the weather." for i in range(2000)
    ]
    dialogue = "\n".join(turns)[:100_000]
    assert len(dialogue) == 100_000
    results = list(service.compare_stream(dialogue, ""))
    assert {r.model for r in results} == set(MODEL_NAMES)
    for result in results:
        assert result.error is None
        assert result.input_tokens <= MAX_INPUT_TOKENS
        assert result.truncated_tokens > 10 * MAX_INPUT_TOKENS  # most of it was cut, and counted
    notice = truncation_notice(results, dialogue)
    worst = max(r.truncated_tokens for r in results)
    assert notice is not None and f"{worst:,}" in notice and str(MAX_INPUT_TOKENS) in notice
    api = service.compare(dialogue, "")
    assert all(api["models"][n]["truncated_tokens"] > 0 for n in MODEL_NAMES)


def test_a_dialogue_beyond_the_character_cap_says_how_much_was_not_read(service: ArenaService) -> None:
    line = "#Person1#: hello there, how are you doing today?\n"
    dialogue = line * ((MAX_DIALOGUE_CHARS + 50_000) // len(line))
    results = list(service.compare_stream(dialogue, ""))
    notice = truncation_notice(results, dialogue)
    dropped = len(dialogue.strip()) - MAX_DIALOGUE_CHARS
    assert notice is not None and f"{dropped:,}" in notice and f"{MAX_DIALOGUE_CHARS:,}" in notice


@pytest.mark.parametrize("reference", ["", "   ", "\n\n \n", "\x00", None])
def test_missing_reference_means_rouge_absent_not_zero(service: ArenaService, reference) -> None:
    result = service.compare(HOSTILE_TEXT["emoji"], reference)
    for name in MODEL_NAMES:
        assert result["models"][name]["rouge"] is None
        assert result["models"][name]["summary"]
    absent = view.result_markdown(ModelResult("original", "a summary", None, 0.1))
    assert "no reference" in absent and "0.0" not in absent


@pytest.mark.parametrize(
    ("tokens", "beams", "allowed"),
    [
        (0, None, "from 1 to 512"),
        (513, None, "from 1 to 512"),
        (-5, None, "from 1 to 512"),
        (2.5, None, "from 1 to 512"),
        ("many", None, "from 1 to 512"),
        (float("nan"), None, "from 1 to 512"),
        (float("inf"), None, "from 1 to 512"),
        (10**30, None, "from 1 to 512"),
        (True, None, "from 1 to 512"),
        (None, 0, "from 1 to 8"),
        (None, 9, "from 1 to 8"),
        (None, "<script>", "from 1 to 8"),
    ],
)
def test_generation_settings_out_of_range_are_refused_with_the_range(
    service: ArenaService, tokens, beams, allowed: str
) -> None:
    with pytest.raises(InputError, match=allowed):
        service.compare("#Person1#: Hi.\n#Person2#: Hello.", "", tokens, beams)


# ---------------------------------------------------------------------------- votes


def _open_battle(service: ArenaService):
    return service.battles.open(
        dialogue_id="test_1", dialogue="#Person1#: Hi.", reference="",
        summaries={"original": "a", "full": "b", "lora": "c"}, settings={}, preset="mini", session_id="s",
    )  # fmt: skip


BAD_CHOICES = ["D", "", " ", "AB", "A B", "none of them", "NULL", "Ａ", "\x00", "A\x00", "<script>", "A" * 33, None, 1, ["A"]]  # fmt: skip
BAD_TOKENS = ["", "   ", "x" * 129, "x" * 32, *PATHS, "' OR 1=1 --", "\x00", None, 42, ["t"], {"token": "t"}]


def test_votes_with_a_choice_outside_a_b_c_none_are_refused_and_stored_nowhere(service: ArenaService) -> None:
    battle = _open_battle(service)
    before = service.votes.count()
    for choice in BAD_CHOICES:
        with pytest.raises(InputError, match="choice must be"):
            service.vote(battle.token, choice)
    assert service.votes.count() == before
    service.vote(battle.token, "b")  # the refusals did not use the token up; lower case is fine
    assert service.votes.count() == before + 1


def test_forged_tokens_are_refused_and_store_nothing(service: ArenaService) -> None:
    battle = _open_battle(service)
    before = service.votes.count()
    for token in [*BAD_TOKENS, battle.token[:-1], battle.token + "x", battle.token.upper()]:
        with pytest.raises(InputError, match="battle token"):
            service.vote(token, "A")
    assert service.votes.count() == before
    assert service.battles.peek(battle.token) is not None  # the real battle is still open


def test_expired_and_reused_tokens_are_refused_through_the_service(
    service: ArenaService, tmp_path: Path
) -> None:
    now = [0.0]
    timed = ArenaService(
        service.config, service.model_set,
        battles=BattleStore(ttl_s=60, clock=lambda: now[0]), votes=VoteStore(tmp_path / "votes.sqlite"),
    )  # fmt: skip
    stale, fresh = _open_battle(timed), None
    now[0] = 61.0
    fresh = _open_battle(timed)
    with pytest.raises(InputError, match="expired"):
        timed.vote(stale.token, "A")
    with pytest.raises(InputError, match="expired"):  # asking again gives the same reason
        timed.vote(stale.token, "A")
    timed.vote(fresh.token, "C")
    with pytest.raises(InputError, match="already used"):
        timed.vote(fresh.token, "A")
    assert [v.choice for v in timed.votes.all()] == ["C"]


# ---------------------------------------------------------------------------- no input becomes a path


class FileAccessSpy:
    """Records the arguments of every file-system audit event while active (PEP 578 hooks)."""

    EVENTS = ("open", "os.listdir", "os.scandir", "os.remove", "os.rename", "os.mkdir", "shutil", "sqlite3.connect", "glob.glob")  # fmt: skip
    _installed: FileAccessSpy | None = None

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.active = threading.Event()

    def hook(self, event: str, args: tuple) -> None:
        if self.active.is_set() and event.startswith(self.EVENTS):
            self.seen.append(f"{event} {args[:2]!r}")

    @classmethod
    @contextlib.contextmanager
    def watching(cls) -> Iterator[FileAccessSpy]:
        if cls._installed is None:  # audit hooks can't be removed: install one, switch it on and off
            cls._installed = cls()
            sys.addaudithook(cls._installed.hook)
        spy = cls._installed
        spy.seen.clear()
        spy.active.set()
        try:
            yield spy
        finally:
            spy.active.clear()


def test_no_user_input_reaches_the_file_system(service: ArenaService) -> None:
    service.examples()  # the data set is read once, from the configured location
    battle = _open_battle(service)
    with FileAccessSpy.watching() as spy:
        service.compare("\n".join(f"#Person1#: {hostile}" for hostile in PATHS), "\n".join(PATHS))
        for hostile in PATHS:
            with pytest.raises(InputError):
                service.example(hostile)  # a dict/list lookup, never a file name
            for token, choice in ((hostile, "A"), (battle.token, hostile)):
                with pytest.raises(InputError):
                    service.vote(token, choice)
        export = Path(service.export_votes_csv())
    touched = [entry for entry in spy.seen for hostile in PATHS if hostile in entry]
    assert touched == []
    assert any(export.name in entry for entry in spy.seen)  # the spy does see file access
    # The CSV export path is the server's choice: a private temporary folder, a timestamped name.
    assert export.parent == service._export_dir and export.name.startswith("arena-votes-")


# ---------------------------------------------------------------------------- through the running app


def _api(url: str, name: str, payload: dict) -> object:
    async def go() -> object:
        async with httpx.AsyncClient(timeout=120) as client:
            return await call(client, url, name, payload)

    return asyncio.run(go())


def _refusal(url: str, name: str, payload: dict) -> str:
    with pytest.raises(Rejected) as refused:
        _api(url, name, payload)
    return str(refused.value)


@pytest.mark.slow
def test_api_refuses_bad_input_with_clear_messages(app_url: str) -> None:
    for dialogue in ("", "   \n\t", "\u0000\u0001"):
        assert "dialogue is empty" in _refusal(app_url, "compare", {"dialogue": dialogue})
    for tokens in (0, 513, -1):
        message = _refusal(app_url, "compare", {"dialogue": "#Person1#: Hi.", "max_new_tokens": tokens})
        assert "from 1 to 512" in message
    assert "from 1 to 8" in _refusal(app_url, "compare", {"dialogue": "#Person1#: Hi.", "num_beams": 99})


@pytest.mark.slow
def test_api_summarizes_hostile_text_and_reports_truncation(app_url: str) -> None:
    # Raw JSON, so the lone surrogate arrives exactly as a hostile client would send it.
    payload = {
        "dialogue": "\n".join(HOSTILE_TEXT.values()) + "\ud800",
        "reference": XSS,
        "max_new_tokens": SHORT,
    }
    result = _api(app_url, "compare", payload)
    assert all(result["models"][n]["error"] is None and result["models"][n]["summary"] for n in MODEL_NAMES)
    long = _api(app_url, "compare", {"dialogue": "#Person1#: la la la. " * 7000, "max_new_tokens": SHORT})
    assert all(long["models"][n]["truncated_tokens"] > 0 for n in MODEL_NAMES)
    plain = _api(
        app_url, "compare", {"dialogue": HOSTILE_TEXT["emoji"], "reference": "  ", "max_new_tokens": SHORT}
    )
    assert all(plain["models"][n]["rouge"] is None for n in MODEL_NAMES)


@pytest.mark.slow
def test_api_refuses_forged_and_reused_tokens_and_bad_choices_storing_nothing(app_server) -> None:
    url = app_server.url

    def stored() -> int:
        with contextlib.closing(sqlite3.connect(app_server.votes_db)) as db:
            return db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]

    battle = _api(url, "battle", {})
    before = stored()
    for token in ("", "x" * 32, "x" * 5000, *PATHS, battle["token"][:-2]):
        assert "battle token" in _refusal(url, "vote", {"token": token, "choice": "A"})
    for choice in ("D", "", "AB", "<script>", "A" * 1000, "'; DROP TABLE votes; --"):
        assert "choice must be" in _refusal(url, "vote", {"token": battle["token"], "choice": choice})
    assert stored() == before
    assert _api(url, "vote", {"token": battle["token"], "choice": "none"})["ok"] is True
    assert "already used" in _refusal(url, "vote", {"token": battle["token"], "choice": "A"})
    assert stored() == before + 1


@pytest.mark.slow
def test_the_file_route_serves_no_arbitrary_file(app_server) -> None:
    targets = ["/etc/passwd", app_server.votes_db, str(Path(app_server.votes_db).parent)]
    for target in targets:
        for route in ("gradio_api/file=", "gradio_api/file/", "file="):
            response = httpx.get(app_server.url + route + target, timeout=30)
            assert response.status_code in (403, 404), (route, target, response.status_code)
            assert b"root:" not in response.content and b"SQLite format" not in response.content


@pytest.mark.slow
def test_uploads_are_capped(app_url: str) -> None:
    """The app takes no files, but gradio's upload route is always there: it must be bounded."""
    big = b"\0" * (2 * 1024 * 1024)
    response = httpx.post(app_url + "gradio_api/upload", files={"files": ("big.bin", big)}, timeout=60)
    assert response.status_code == 413, (response.status_code, response.text[:200])


# ---------------------------------------------------------------------------- in a real browser


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
INJECTED = """() => ({
    pwned: typeof window.__pwned !== "undefined",
    images: document.querySelectorAll('img[src="x"], img[src$="/x"]').length,
    scripts: [...document.scripts].filter(s => s.textContent.trim() === "window.__pwned=1").length,
    links: document.querySelectorAll('a[href^="javascript:"]').length,
    bold: [...document.querySelectorAll("b")].filter(b => b.textContent === "bold").length,
})"""


@pytest.fixture(scope="module")
def browser():
    executable = "/usr/bin/chromium"
    if not Path(executable).is_file():
        pytest.skip("chromium not found at /usr/bin/chromium (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# Proof that injected markup had its chance, instead of a fixed wait: a control image added
# now, with the injected images' URL, fails (or loads) after every image already on the page
# started loading, so once its handler has run, an injected onerror would have run too. Scripts
# inserted as markup never run; ones inserted by DOM calls run at once, before this.
SETTLE_PROBE = """() => {
    window.__probeDone = false;
    const probe = new Image();
    probe.onload = probe.onerror = () => { window.__probeDone = true; };
    probe.src = "x";
}"""


def _wait_until_handlers_had_their_chance(page) -> None:
    page.evaluate(SETTLE_PROBE)
    page.wait_for_function("() => window.__probeDone === true")


def _assert_inert(page) -> None:
    _wait_until_handlers_had_their_chance(page)
    found = page.evaluate(INJECTED)
    assert found == {"pwned": False, "images": 0, "scripts": 0, "links": 0, "bold": 0}, found


@pytest.mark.slow
@pytest.mark.browser
def test_pasted_html_stays_text_in_the_compare_tab(browser, app_url: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(90_000)
    page.goto(app_url)
    page.wait_for_selector("#summarize")
    dialogue = page.locator("#dialogue textarea")
    dialogue.fill(HOSTILE_TEXT["html-and-script"])
    # Typing (fill alone fires no gradio .input) makes the app drop the example's reference,
    # asynchronously: wait for that before typing our own.
    dialogue.press_sequentially(" ")
    page.wait_for_function("() => document.querySelector('#reference textarea').value === ''")
    page.locator("#reference textarea").fill(XSS + " <b>bold</b>")
    page.locator("#summarize").click()
    for name in MODEL_NAMES:  # each column answered and scored against the hostile reference
        page.wait_for_function(
            "id => document.querySelector(`#${id} textarea`)?.value.length > 0", arg=f"summary-{name}"
        )
        page.wait_for_function(
            "id => document.querySelector('#scores-' + id)?.innerText.includes('R-1')", arg=name
        )
    _assert_inert(page)  # waits for proof that injected handlers would have fired
    assert dialogue.input_value() == HOSTILE_TEXT["html-and-script"] + " "  # shown as typed
    page.close()


@pytest.mark.slow
@pytest.mark.browser
def test_hostile_text_is_inert_in_every_display_component(browser) -> None:
    """Model output, errors and statuses can echo user text: the app's presentation functions
    and component types, fed the payload everywhere, must render it as text."""
    import gradio as gr

    from tests.conftest import free_port

    hostile = HOSTILE_TEXT["html-and-script"]
    failed = ModelResult("full", "", None, 0.0, error=f"generation failed: {hostile}")
    scored = ModelResult(
        "lora", hostile, {"rouge1": 0.5, "rouge2": 0.1, "rougeL": 0.4, "rougeLsum": 0.4}, 0.2,
        spans=[(hostile, "overlap"), (" tail", None)],
    )  # fmt: skip
    with gr.Blocks() as demo:
        shown = [  # each waited for below (by its elem_id) before the check
            gr.Markdown(
                view.column_header("full", f"unavailable: model at /tmp/{hostile} is broken"),
                elem_id="hostile-0",
            ),
            gr.Markdown(view.result_markdown(failed), elem_id="hostile-1"),
            gr.Markdown(view.result_markdown(scored), elem_id="hostile-2"),
            gr.Markdown(f"⚠️ {view.md_escape(hostile)}", elem_id="hostile-3"),
            gr.Textbox(value=hostile, interactive=False, elem_id="hostile-4"),
            gr.HighlightedText(value=scored.spans, color_map={"overlap": "#fdba74"}, elem_id="hostile-5"),
            gr.Dataframe(
                value=[[hostile, 1, 1, "100%", "0–100%", "0.5"]],
                headers=list(view.LEADERBOARD_COLUMNS),
                elem_id="hostile-6",
            ),
        ]
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        # Every component has rendered its value (the table its hostile cell) before the check.
        page.wait_for_function(
            """count => [...Array(count).keys()].every(i => {
                const el = document.getElementById('hostile-' + i);
                const text = el ? el.innerText + [...el.querySelectorAll('textarea')].map(t => t.value).join('') : '';
                return text.trim().length > 0;
            }) && document.getElementById('hostile-' + (count - 1)).innerText.includes('__pwned')""",
            arg=len(shown),
        )
        _assert_inert(page)
        assert "<script>" in page.content().replace("&lt;", "<").replace("&gt;", ">")  # shown, as text
        page.close()
    finally:
        demo.close()
