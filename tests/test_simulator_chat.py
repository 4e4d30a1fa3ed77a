"""The simulator's chat completions (GeekAI and BigModel): shapes, rewrites, markers, limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from batchvid.simulator import (
    BIGMODEL_PREFIX,
    GEEKAI_PREFIX,
    KEY_ARREARS,
    Simulator,
    SimulatorConfig,
)
from batchvid.simulator.chat import rewrite

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer chat-key"}
CHAT = {
    "geekai": f"{GEEKAI_PREFIX}/chat/completions",
    "bigmodel": f"{BIGMODEL_PREFIX}/chat/completions",
}
PROVIDERS = pytest.mark.parametrize("provider", ["geekai", "bigmodel"])
INSTRUCTIONS = "Rewrite the user's idea as one vivid paragraph for a video model."


@asynccontextmanager
async def client_for(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sim.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client:
        yield client


def chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": prompt}]
    return {"model": "glm-4-flash", "messages": messages, "temperature": 0.1, **extra}


async def ask(
    provider: str, prompt: str, sim: Simulator | None = None, **extra: Any
) -> httpx.Response:
    async with client_for(sim or Simulator()) as client:
        return await client.post(CHAT[provider], json=chat_body(prompt, **extra), headers=AUTH)


def content(response: httpx.Response) -> str:
    text = response.json()["choices"][0]["message"]["content"]
    assert isinstance(text, str)
    return text


@PROVIDERS
async def test_answer_is_an_openai_chat_completion(provider: str) -> None:
    """The answer has the OpenAI chat completion shape; BigModel's adds request_id."""
    response = await ask(provider, "a cat on a skateboard")
    body = response.json()
    assert response.status_code == 200
    expected = {"id", "object", "created", "model", "choices", "usage"}
    assert set(body) == (expected | {"request_id"} if provider == "bigmodel" else expected)
    assert body["object"] == "chat.completion"
    assert body["model"] == "glm-4-flash"
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


async def test_bigmodel_echoes_the_request_id() -> None:
    """A BigModel request_id given by the client comes back in the answer."""
    response = await ask("bigmodel", "a cat", request_id="enhance-0001")
    assert response.json()["request_id"] == "enhance-0001"


@PROVIDERS
async def test_rewrite_is_a_plausible_paragraph_from_the_prompt(provider: str) -> None:
    """The rewrite starts from the prompt, is one paragraph of 200 to 450 characters."""
    text = content(await ask(provider, "a red fox crossing a snowy field"))
    assert text.startswith("A red fox crossing a snowy field")
    assert 200 <= len(text) <= 450
    assert "\n" not in text


async def test_rewrite_keeps_the_prompts_language() -> None:
    """A Chinese prompt gets a Chinese rewrite."""
    text = content(await ask("bigmodel", "一只猫在滑板上"))
    assert text.startswith("一只猫在滑板上")
    assert "The scene" not in text and "镜头" in text


@PROVIDERS
async def test_same_request_same_answer_in_any_simulator(provider: str) -> None:
    """The same prompt and seed give the same content in two simulators."""
    first = content(await ask(provider, "waves at night", Simulator(SimulatorConfig(seed=4))))
    second = content(await ask(provider, "waves at night", Simulator(SimulatorConfig(seed=4))))
    assert first == second
    assert content(await ask(provider, "a desert at noon")) != first


@PROVIDERS
async def test_long_marker_gives_an_answer_over_512_characters(provider: str) -> None:
    """[long] gives an answer longer than a video prompt may be, without the marker."""
    text = content(await ask(provider, "a lighthouse [long]"))
    assert len(text) > 512
    assert "[long]" not in text


@PROVIDERS
async def test_empty_marker_gives_empty_content(provider: str) -> None:
    """[empty] gives an answer whose content is the empty string."""
    response = await ask(provider, "a tree [empty]")
    assert response.status_code == 200
    assert content(response) == ""


@PROVIDERS
async def test_chat_error_marker_gives_a_provider_error(provider: str) -> None:
    """[chat-error] is refused with HTTP 400 (BigModel code 1301) and no choices."""
    response = await ask(provider, "a bridge [chat-error]")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == ("1301" if provider == "bigmodel" else 400)


@PROVIDERS
async def test_preamble_marker_wraps_the_answer(provider: str) -> None:
    """[preamble] wraps the rewrite as 'Here is the enhanced prompt: "..."'."""
    text = content(await ask(provider, "a kite [preamble]"))
    assert text.startswith('Here is the enhanced prompt: "A kite')
    assert text.endswith('"')


async def test_video_markers_survive_the_rewrite() -> None:
    """A video marker in the prompt is kept in the rewrite, so it still works downstream."""
    assert "[black]" in content(await ask("geekai", "a night sky [black]"))


@PROVIDERS
async def test_chat_requests_are_counted_in_stats(provider: str) -> None:
    """Every chat request received counts in chat_requests, refused ones too; creates do not."""
    sim = Simulator()
    async with client_for(sim) as client:
        await client.post(CHAT[provider], json=chat_body("a"), headers=AUTH)
        await client.post(CHAT[provider], json=chat_body("b [chat-error]"), headers=AUTH)
        await client.post(CHAT[provider], json=chat_body("c"))
    stats = sim.stats()
    assert stats["chat_requests"] == 3
    assert stats["create_requests"] == 0
    assert stats["requests"][f"{provider}.chat"] == {"200": 1, "400": 1, "401": 1}


@PROVIDERS
async def test_chat_needs_a_valid_key(provider: str) -> None:
    """No key is 401; an account in arrears is refused as for video creates."""
    async with client_for(Simulator()) as client:
        missing = await client.post(CHAT[provider], json=chat_body("a"))
        arrears = await client.post(
            CHAT[provider], json=chat_body("a"), headers={"Authorization": f"Bearer {KEY_ARREARS}"}
        )
    assert missing.status_code == 401
    assert arrears.status_code == (429 if provider == "bigmodel" else 402)


@PROVIDERS
async def test_chat_shares_the_rate_limit(provider: str) -> None:
    """Beyond rpm requests in 60 s, a chat request gets 429 with Retry-After."""
    sim = Simulator(SimulatorConfig(rpm=2))
    async with client_for(sim) as client:
        codes = [
            (await client.post(CHAT[provider], json=chat_body(f"p{n}"), headers=AUTH))
            for n in range(3)
        ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert "retry-after" in codes[2].headers


@PROVIDERS
async def test_chat_gets_injected_faults(provider: str) -> None:
    """With fault_rate 1 and only status_503 enabled, every chat request answers 503."""
    sim = Simulator(SimulatorConfig(fault_rate=1.0, faults=frozenset({"status_503"})))
    response = await ask(provider, "a cat", sim)
    assert response.status_code == 503


@PROVIDERS
@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "a"}]},
        {"model": "glm-4-flash", "messages": []},
        {"model": "glm-4-flash", "messages": [{"role": "system", "content": "only"}]},
        {"model": "glm-4-flash", "messages": [{"role": "user", "content": "a"}], "stream": True},
    ],
)
async def test_malformed_chat_bodies_are_refused(provider: str, body: dict[str, Any]) -> None:
    """No model, no user message or stream=true: HTTP 400."""
    async with client_for(Simulator()) as client:
        response = await client.post(CHAT[provider], json=body, headers=AUTH)
    assert response.status_code == 400


async def test_bigmodel_refuses_a_model_it_does_not_have() -> None:
    """BigModel answers 400 code 1211 for a non-GLM chat model."""
    response = await ask("bigmodel", "a cat", model="gpt-4o")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "1211"


def test_rewrite_length_stays_bounded_for_a_long_prompt() -> None:
    """Even a 500-character prompt gives a rewrite of at most 450 characters."""
    assert len(rewrite("word " * 100)) <= 450
