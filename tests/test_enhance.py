"""Prompt enhancement (batchvid.enhance): settings, fingerprint, the chat request, cleaning,
length limits, fallback, retries and secret scrubbing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import traceback
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from pytest_httpx import HTTPXMock

from batchvid.enhance import (
    EnhanceError,
    EnhanceResult,
    EnhanceSettings,
    clean_answer,
    cut_to_limit,
    default_instructions,
    enhance_fingerprint,
    enhance_prompt,
    enhance_settings,
    looks_like_refusal,
    merge_enhance,
    retrying,
)
from batchvid.errors import Location, ManifestError, RunFatalError
from batchvid.retry import RetryPolicy

ROOT = Path(__file__).parent.parent
BASES = {
    "geekai": "https://geekai.co/api/v1",
    "bigmodel": "https://open.bigmodel.cn/api/paas/v4",
}
SECRET = "sk-enhance-secret-0123456789"
HERE = Location("m.yaml", 3, 5)
SETTINGS = EnhanceSettings("glm-4-flash", "Describe the shot vividly.", "inline")


def chat_answer(content: Any, finish_reason: str = "stop", tokens: int = 42) -> dict[str, Any]:
    """An OpenAI-shaped chat completion carrying ``content``."""
    return {
        "id": "chat-1",
        "object": "chat.completion",
        "model": "glm-4-flash",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": tokens},
    }


def make_client(provider: str) -> httpx.AsyncClient:
    """A client set up as the runner's video client is: API root and Authorization header."""
    return httpx.AsyncClient(
        base_url=BASES[provider], headers={"Authorization": f"Bearer {SECRET}"}
    )


@pytest.fixture
async def geekai() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client("geekai") as client:
        yield client


def chat_url(provider: str = "geekai") -> str:
    return f"{BASES[provider]}/chat/completions"


def body_of(request: httpx.Request) -> dict[str, Any]:
    value = json.loads(request.content)
    assert isinstance(value, dict)
    return value


async def enhance(client: httpx.AsyncClient, prompt: str = "a fox in snow", **kw: Any) -> Any:
    settings = kw.pop("settings", SETTINGS)
    return await enhance_prompt(client, "geekai", settings, prompt, api_key=SECRET, **kw)


# --- the request ------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
async def test_request_shape(httpx_mock: HTTPXMock, provider: str) -> None:
    """One POST to {root}/chat/completions with the key, model, system+user messages, temperature."""
    httpx_mock.add_response(url=chat_url(provider), method="POST", json=chat_answer("A fox."))
    settings = EnhanceSettings("glm-4-air", "Be vivid.", "inline", temperature=0.2)
    async with make_client(provider) as client:
        result = await enhance_prompt(
            client, provider, settings, "a fox in snow", api_key=SECRET, limit=512
        )
    request = httpx_mock.get_request()
    assert request is not None
    assert str(request.url) == chat_url(provider)
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["Content-Type"] == "application/json"
    body = body_of(request)
    assert body["model"] == "glm-4-air" and body["temperature"] == 0.2
    assert body["stream"] is False
    system, user = body["messages"]
    assert system["role"] == "system" and system["content"].startswith("Be vivid.")
    assert "at most 512 characters" in system["content"]
    assert user == {"role": "user", "content": "a fox in snow"}
    assert result == EnhanceResult("A fox.", "a fox in snow", "enhanced", None, "glm-4-air", 1, 42)


@pytest.mark.anyio
async def test_only_text_is_sent(httpx_mock: HTTPXMock, geekai: httpx.AsyncClient) -> None:
    """The request carries the prompt text and nothing image-like (an image job's image stays)."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer("A fox."))
    await enhance(geekai)
    request = httpx_mock.get_request()
    assert request is not None
    body = body_of(request)
    assert set(body) == {"model", "messages", "temperature", "stream"}
    assert all(isinstance(m["content"], str) for m in body["messages"])


@pytest.mark.anyio
async def test_first_frame_job_says_the_image_is_unseen(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """An image job's system message says a first frame exists; a text job's does not."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer("A fox."), is_reusable=True)
    await enhance(geekai, first_frame=True)
    await enhance(geekai)
    with_image, without = (body_of(r)["messages"][0]["content"] for r in httpx_mock.get_requests())
    assert "first-frame image that you cannot see" in with_image
    assert "first-frame" not in without


# --- cleaning ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            'Here is an enhanced prompt:\n\n"A red fox trots across snow."',
            "A red fox trots across snow.",
        ),
        ("**Enhanced prompt:** A red fox\ntrots across snow.", "A red fox trots across snow."),
        ("Sure! Here is the rewritten prompt:\n> “A fox at dawn.”", "A fox at dawn."),
        ("```\nA fox runs.\n```", "A fox runs."),
        ("<think>plan the shot</think>\nA fox runs.", "A fox runs."),
        ("# Prompt\n\nA fox   runs\n\n through   snow.", "A fox runs through snow."),
        ("以下是优化后的提示词：\n「一只小猫在窗台上\n打盹。」", "一只小猫在窗台上打盹。"),
        ("好的，这是增强后的描述：“一只小猫在窗台上打盹。”", "一只小猫在窗台上打盹。"),
        ("优化后的视频描述：\n\n一只小猫在窗台上打盹。", "一只小猫在窗台上打盹。"),
    ],
)
def test_clean_answer_strips_wrapping(answer: str, expected: str) -> None:
    """Preambles (EN and ZH), quotes, markdown, thinking and line breaks are removed."""
    assert clean_answer(answer) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "New York at night: neon signs shimmer on wet streets.",
        'A child says "hello" to a robot, who answers "hi".',
        "Sure-footed goats climb a cliff: the camera follows from below.",
    ],
)
def test_clean_answer_keeps_content_that_looks_like_wrapping(answer: str) -> None:
    """A description that merely starts with a colon phrase or holds quotes is kept whole."""
    assert clean_answer(answer) == answer


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot create that content.", True),
        ("抱歉，我无法满足这个请求。", True),
        ("A sorry-looking dog waits by the door.", False),
        ("一只小狗在门口等待。", False),
    ],
)
def test_looks_like_refusal(text: str, refusal: bool) -> None:
    """Refusal openings in English and Chinese are recognised; descriptions are not."""
    assert looks_like_refusal(text) is refusal


# --- length -----------------------------------------------------------------------------------


def test_cut_to_limit_ends_at_a_sentence() -> None:
    """An over-long text is cut after its last sentence end within the limit (EN and ZH)."""
    assert cut_to_limit("One two three. Four five six. Seven", 20) == "One two three."
    assert cut_to_limit("一二三。四五六七八九", 6) == "一二三。"
    assert cut_to_limit("Version 3.5 works. Then more words", 14) == "Version 3.5"


def test_cut_to_limit_falls_back_to_a_word_then_a_hard_cut() -> None:
    """Without a sentence end it cuts at a space; without a space, at the limit."""
    assert cut_to_limit("alpha beta gamma", 12) == "alpha beta"
    assert cut_to_limit("一二三四五六七八", 5) == "一二三四五"


def test_cut_to_limit_never_exceeds_the_limit() -> None:
    """Whatever the text and limit, the result fits and is not empty."""
    text = clean_answer(
        "A fox. It trots, slowly! Does it stop? 狐狸在雪中奔跑。镜头跟随！ " * 20 + "end"
    )
    for limit in range(1, len(text) + 5):
        cut = cut_to_limit(text, limit)
        assert 0 < len(cut) <= limit


@pytest.mark.anyio
async def test_over_long_answer_asks_again_then_cuts(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """Over the limit: a second, stricter request; still over: cut at a sentence end, warned."""
    sentence = "The fox trots through deep snow under a pale sky. "
    httpx_mock.add_response(url=chat_url(), json=chat_answer(sentence * 14))
    httpx_mock.add_response(url=chat_url(), json=chat_answer(sentence * 12))
    result = await enhance(geekai, limit=512)
    first, second = httpx_mock.get_requests()
    messages = body_of(second)["messages"]
    assert messages[:2] == body_of(first)["messages"]
    assert messages[2] == {"role": "assistant", "content": (sentence * 14).strip()}
    assert "the limit is 512" in messages[3]["content"] and "at most 384" in messages[3]["content"]
    assert result.status == "truncated" and result.requests == 2
    assert len(result.prompt) <= 512 and result.prompt.endswith("pale sky.")
    assert result.warning == (
        "the rewritten prompt was 699 characters, over the 512-character limit; then 599 when "
        "asked for a shorter one; it was cut at a sentence end to 499 characters"
    )


@pytest.mark.anyio
async def test_failed_second_request_cuts_the_first_answer(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """When the stricter request fails, the first answer is cut and the warning says why."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer("Snow falls on the fox. " * 30))
    httpx_mock.add_response(url=chat_url(), status_code=400, json={"error": {"message": "no"}})
    result = await enhance(geekai)
    assert result.status == "truncated" and len(result.prompt) <= 512
    assert result.prompt.endswith("fox.") and result.warning is not None
    assert "asking for a shorter one failed (invalid_request: GeekAI chat: no" in result.warning


@pytest.mark.anyio
async def test_second_answer_that_fits_is_used(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """When the stricter request's answer fits, it is the prompt, without a warning."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer("word " * 200))
    httpx_mock.add_response(url=chat_url(), json=chat_answer("A short vivid fox."))
    result = await enhance(geekai)
    assert (result.prompt, result.status, result.warning) == (
        "A short vivid fox.",
        "enhanced",
        None,
    )
    assert result.tokens == 84


# --- failure and fallback ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (chat_answer(""), "empty answer"),
        (chat_answer(None), "empty answer"),
        (chat_answer("  \n``` ```\n"), "empty answer"),
        (chat_answer("I'm sorry, I can't help with that."), "declined"),
        (chat_answer("A fox.", finish_reason="sensitive"), "content filter"),
        ({"object": "chat.completion"}, "without choices[0].message.content"),
    ],
)
async def test_unusable_answer_falls_back(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient, answer: dict[str, Any], why: str
) -> None:
    """An empty, refused or unreadable answer gives the original prompt back with a warning."""
    httpx_mock.add_response(url=chat_url(), json=answer)
    result = await enhance(geekai, "a fox in snow")
    assert result.prompt == "a fox in snow" and result.status == "fallback"
    assert result.warning is not None and why in result.warning


@pytest.mark.anyio
async def test_required_raises_before_any_video_request(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """required: true turns an empty answer into EnhanceError(enhance_failed); no video is asked."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer(""))
    required = EnhanceSettings("glm-4-flash", "Be vivid.", "inline", required=True)

    async def job() -> None:
        result = await enhance(geekai, settings=required)
        await geekai.post("videos/generations", json={"prompt": result.prompt})

    with pytest.raises(EnhanceError) as caught:
        await job()
    assert caught.value.kind == "enhance_failed" and "empty answer" in str(caught.value)
    assert [r.url.path for r in httpx_mock.get_requests()] == ["/api/v1/chat/completions"]


@pytest.mark.anyio
async def test_failed_request_falls_back_without_a_guard(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """With no retry policy, a 429 is one failed request: original prompt, warning names it."""
    httpx_mock.add_response(url=chat_url(), status_code=429, json={"error": {"message": "slow"}})
    result = await enhance(geekai)
    assert result.status == "fallback" and result.requests == 1
    assert result.warning is not None and "rate_limited" in result.warning


@pytest.mark.anyio
async def test_rate_limited_then_success_under_the_injected_retry(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """A 429 with Retry-After is retried by the caller's policy, after its limiter, then succeeds."""
    httpx_mock.add_response(
        url=chat_url(), status_code=429, headers={"Retry-After": "7"}, json={"error": {}}
    )
    httpx_mock.add_response(url=chat_url(), json=chat_answer("A fox at dawn."))
    slept: list[float] = []
    acquired: list[int] = []
    retried: list[tuple[int, str]] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def acquire() -> None:
        acquired.append(1)

    guard = retrying(
        RetryPolicy(retries=3),
        sleep=sleep,
        before=acquire,
        on_retry=lambda n, delay, exc: retried.append((n, exc.kind)),
    )
    result = await enhance(geekai, guard=guard)
    assert result.prompt == "A fox at dawn." and result.status == "enhanced"
    assert result.requests == 2 and len(acquired) == 2
    assert retried == [(1, "rate_limited")] and slept[0] >= 7


@pytest.mark.anyio
async def test_account_failure_is_raised_not_fallen_back(
    httpx_mock: HTTPXMock,
) -> None:
    """An account-level refusal (BigModel 1113, no balance) stops the run: RunFatalError."""
    httpx_mock.add_response(
        url=chat_url("bigmodel"), status_code=429, json={"error": {"code": "1113", "message": "x"}}
    )
    async with make_client("bigmodel") as client:
        with pytest.raises(RunFatalError) as caught:
            await enhance_prompt(client, "bigmodel", SETTINGS, "a fox", api_key=SECRET)
    assert caught.value.kind == "insufficient_balance"


# --- the key never leaks ----------------------------------------------------------------------


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@pytest.mark.anyio
async def test_key_echoed_in_an_error_never_reaches_the_result(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """A server echoing the key in its error body: the warning has it blanked out."""
    httpx_mock.add_response(
        url=chat_url(), status_code=400, json={"error": {"message": f"bad key {SECRET}"}}
    )
    result = await enhance(geekai)
    assert result.warning is not None and "[REDACTED]" in result.warning
    assert SECRET not in json.dumps(result.record())


@pytest.mark.anyio
async def test_key_echoed_never_reaches_exception_text(httpx_mock: HTTPXMock) -> None:
    """EnhanceError and RunFatalError texts and tracebacks never hold an echoed key."""
    httpx_mock.add_response(
        url=chat_url("bigmodel"), status_code=400, json={"error": {"message": f"k={SECRET}"}}
    )
    httpx_mock.add_response(
        url=chat_url("bigmodel"), status_code=401, json={"error": {"message": f"k={SECRET}"}}
    )
    required = EnhanceSettings("glm-4-flash", "x", "inline", required=True)
    async with make_client("bigmodel") as client:
        with pytest.raises(EnhanceError) as failed:
            await enhance_prompt(client, "bigmodel", required, "a fox", api_key=SECRET)
        with pytest.raises(RunFatalError) as refused:
            await enhance_prompt(client, "bigmodel", required, "a fox", api_key=SECRET)
    for exc in (failed.value, refused.value):
        assert SECRET not in _all_text(exc) and "[REDACTED]" in str(exc)


@pytest.mark.anyio
async def test_key_echoed_in_the_answer_is_never_the_prompt(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """An answer containing the key is not used as the prompt (it would be sent and recorded)."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer(f"A fox named {SECRET} runs."))
    result = await enhance(geekai)
    assert result.status == "fallback" and SECRET not in json.dumps(result.record())


# --- settings, fingerprint, schema ------------------------------------------------------------


def test_fingerprint_follows_the_instructions_content_not_their_place() -> None:
    """Editing the instructions changes the fingerprint; moving them or `required` does not."""
    base = EnhanceSettings("glm-4-flash", "Be vivid.", "prompts/a.txt")
    moved = EnhanceSettings("glm-4-flash", "Be vivid.", "inline", required=True)
    edited = EnhanceSettings("glm-4-flash", "Be vivid!", "prompts/a.txt")
    assert enhance_fingerprint(base) == enhance_fingerprint(moved)
    assert enhance_fingerprint(base) != enhance_fingerprint(edited)
    assert (
        enhance_fingerprint(base)["instructions_sha256"] == hashlib.sha256(b"Be vivid.").hexdigest()
    )


@pytest.mark.anyio
async def test_fingerprint_does_not_depend_on_the_answer(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """Two runs that get different rewrites have the same fingerprint (it is known before asking)."""
    httpx_mock.add_response(url=chat_url(), json=chat_answer("A red fox."))
    httpx_mock.add_response(url=chat_url(), json=chat_answer("A grey fox."))
    before = enhance_fingerprint(SETTINGS)
    first, second = await enhance(geekai), await enhance(geekai)
    assert first.prompt != second.prompt
    assert enhance_fingerprint(SETTINGS) == before


def test_fingerprint_spells_temperature_one_way() -> None:
    """temperature 0 and 0.0 give the same fingerprint (one job key, not two)."""
    as_int = enhance_settings({"temperature": 0}, ROOT, location=HERE, path="$.defaults.enhance")
    as_float = enhance_settings(
        {"temperature": 0.0}, ROOT, location=HERE, path="$.defaults.enhance"
    )
    assert as_int is not None and as_float is not None
    assert json.dumps(enhance_fingerprint(as_int)) == json.dumps(enhance_fingerprint(as_float))


def test_default_instructions_are_pinned() -> None:
    """The shipped instructions' hash is in every default job key: changing it reruns jobs."""
    digest = hashlib.sha256(default_instructions().encode("utf-8")).hexdigest()
    assert digest == "a93425cb5c40f83addcfc0a3423fc8c3f800dd2be6931c0cd9b326ca002e17d2"


def test_settings_defaults_and_off() -> None:
    """true / {} give the defaults; false and None give no enhancement."""
    on = enhance_settings(True, ROOT, location=HERE, path="$.enhance")
    assert on == EnhanceSettings("glm-4-flash", default_instructions(), "default", 0.1, False)
    assert enhance_settings({}, ROOT, location=HERE, path="$.enhance") == on
    assert enhance_settings(False, ROOT, location=HERE, path="$.enhance") is None
    assert enhance_settings(None, ROOT, location=HERE, path="$.enhance") is None


def test_instructions_file_beside_the_manifest(tmp_path: Path) -> None:
    """A one-line value ending in .txt/.md is read from the manifest's directory."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "enhance.txt").write_text("  Be cinematic.\n", encoding="utf-8")
    settings = enhance_settings(
        {"model": "glm-4-plus", "instructions": "prompts/enhance.txt", "temperature": 0.3},
        tmp_path,
        location=HERE,
        path="$.jobs[0].enhance",
    )
    assert settings == EnhanceSettings("glm-4-plus", "Be cinematic.", "prompts/enhance.txt", 0.3)


def test_instructions_line_ends_do_not_change_the_fingerprint(tmp_path: Path) -> None:
    """The same instructions saved with CRLF line ends give the same fingerprint as with LF."""
    (tmp_path / "lf.txt").write_bytes(b"Be vivid.\nNo preamble.\n")
    (tmp_path / "crlf.txt").write_bytes(b"Be vivid.\r\nNo preamble.\r\n")
    lf, crlf = (
        enhance_settings({"instructions": name}, tmp_path, location=HERE, path="$.enhance")
        for name in ("lf.txt", "crlf.txt")
    )
    assert lf is not None and crlf is not None
    assert enhance_fingerprint(lf) == enhance_fingerprint(crlf)


def test_inline_instructions() -> None:
    """Text that does not end in .txt/.md, or spans lines, is the instructions themselves."""
    for text in ("Describe the scene in detail.", "Read notes.md\nthen describe."):
        settings = enhance_settings({"instructions": text}, ROOT, location=HERE, path="$.enhance")
        assert settings is not None
        assert (settings.instructions, settings.instructions_source) == (text, "inline")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("prompts/missing.txt", "does not exist"),
        ("../outside.md", "leaves the manifest's directory"),
        ("/etc/enhance.txt", "absolute path"),
        ("empty.txt", "is empty"),
    ],
)
def test_bad_instructions_file_is_a_located_error(
    tmp_path: Path, reference: str, message: str
) -> None:
    """A missing, escaping or empty instructions file is a ManifestError at the given place."""
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        enhance_settings(
            {"instructions": reference}, tmp_path, location=HERE, path="$.jobs[2].enhance"
        )
    assert str(caught.value).startswith("m.yaml:3:5: $.jobs[2].enhance.instructions: ")
    assert message in str(caught.value)


def test_merge_enhance() -> None:
    """The job's keys win over the defaults'; false turns it off; true takes the defaults."""
    defaults = {"model": "glm-4-plus", "temperature": 0.2}
    assert merge_enhance(defaults, {"temperature": 0}) == {"model": "glm-4-plus", "temperature": 0}
    assert merge_enhance(defaults, False) is False
    assert merge_enhance(defaults, True) == defaults
    assert merge_enhance(defaults, None) == defaults
    assert merge_enhance(None, None) is None
    assert merge_enhance(False, {"model": "glm-4-air"}) == {"model": "glm-4-air"}
    assert merge_enhance(True, None) == {}


def _manifest_schema() -> dict[str, Any]:
    text = (ROOT / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _enhance_validator() -> Draft202012Validator:
    """The manifest schema's $defs.enhance on its own: one enhance value."""
    return Draft202012Validator({"$defs": _manifest_schema()["$defs"], "$ref": "#/$defs/enhance"})


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        {},
        {
            "model": "glm-4.5-flash",
            "instructions": "prompts/e.txt",
            "temperature": 0,
            "required": True,
        },
        {"model": "deepseek/deepseek-chat", "instructions": "Be vivid.\nNo preamble."},
    ],
)
def test_schema_accepts_enhance(value: Any) -> None:
    """The manifest schema accepts the documented forms of enhance."""
    assert list(_enhance_validator().iter_errors(value)) == []


@pytest.mark.parametrize(
    "value",
    [
        "glm-4-flash",
        {"temperature": 1.5},
        {"temperature": "low"},
        {"model": "glm 4 flash"},
        {"instructions": "  "},
        {"required": "yes"},
        {"modle": "glm-4-flash"},
    ],
)
def test_schema_rejects_enhance(value: Any) -> None:
    """The manifest schema rejects wrong types, ranges, names and unknown keys."""
    assert list(_enhance_validator().iter_errors(value)) != []


def test_result_record_round_trips() -> None:
    """A journal entry reads back as the same result; a damaged entry reads as None."""
    result = EnhanceResult("A fox.", "fox", "truncated", "cut", "glm-4-flash", 2, 99)
    assert EnhanceResult.from_record(json.loads(json.dumps(result.record()))) == result
    entry = result.journal_entry("fox", "ab" * 32)
    assert (entry["event"], entry["id"], entry["key"]) == ("enhanced", "fox", "ab" * 32)
    assert EnhanceResult.from_record(entry) == result
    assert EnhanceResult.from_record({**result.record(), "prompt": ""}) is None
    assert EnhanceResult.from_record({**result.record(), "status": "maybe"}) is None


@pytest.mark.slow
def test_wheel_ships_the_default_instructions(tmp_path: Path) -> None:
    """A built wheel carries batchvid/enhance/instructions.txt, and it loads from there."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("batchvid-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert "batchvid/enhance/instructions.txt" in zf.namelist()
        zf.extractall(tmp_path / "site")
    loaded = subprocess.run(
        [sys.executable, "-c", "from batchvid.enhance import default_instructions as d; print(d())"],
        cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert loaded.stdout.strip() == default_instructions()


@pytest.mark.anyio
async def test_bigmodel_error_code_in_a_2xx_answer_is_classified(httpx_mock: HTTPXMock) -> None:
    """A BigModel 200 carrying business code 1301 (unsafe) is a content_filter failure."""
    httpx_mock.add_response(
        url=chat_url("bigmodel"), json={"error": {"code": "1301", "message": "unsafe input"}}
    )
    async with make_client("bigmodel") as client:
        result = await enhance_prompt(client, "bigmodel", SETTINGS, "a fox", api_key=SECRET)
    assert result.status == "fallback"
    assert result.warning is not None and "content_filter" in result.warning


@pytest.mark.anyio
async def test_retries_exhausted_falls_back(
    httpx_mock: HTTPXMock, geekai: httpx.AsyncClient
) -> None:
    """A chat API that keeps failing is tried 1 + retries times, then the original is used."""
    httpx_mock.add_response(url=chat_url(), status_code=503, is_reusable=True)

    async def sleep(seconds: float) -> None:
        pass

    result = await enhance(geekai, guard=retrying(RetryPolicy(retries=2), sleep=sleep))
    assert result.status == "fallback" and result.requests == 3
    assert len(httpx_mock.get_requests()) == 3


def test_manifest_schema_validates_enhance_in_defaults_and_jobs() -> None:
    """The manifest schema validates enhance under defaults and a job, and locates an error."""
    schema = _manifest_schema()
    validator = Draft202012Validator(schema)
    manifest: dict[str, Any] = {
        "version": 1,
        "defaults": {"enhance": {"model": "glm-4-flash", "instructions": "prompts/e.txt"}},
        "jobs": [{"id": "a", "prompt": "a fox", "enhance": False}, {"id": "b", "prompt": "x"}],
    }
    assert list(validator.iter_errors(manifest)) == []
    manifest["jobs"][1]["enhance"] = {"temperature": 2}
    (error,) = validator.iter_errors(manifest)
    assert list(error.absolute_path) == ["jobs", 1, "enhance", "temperature"]
