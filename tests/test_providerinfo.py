"""What the CLI checks about a provider without importing the providers (batchvid.providerinfo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from batchvid.errors import UsageError
from batchvid.providerinfo import KEY_VARIABLES, PROVIDER_ROOTS, _plain_parts, url_parts
from batchvid.providers import PROVIDERS, get_provider

CASES = [
    "http://127.0.0.1:9", "https://geekai.co/api/v1", "https://GeekAI.co/api/v1/", "http://a/b/./c",
    "http://a/b/.x", "http://999.1.1.1", "http://1.2.3", "http://a:70000", "http://a:65535/x",
    "http://xn--bcher-kva.ch/", "http://bücher.ch/", "http://a..b", "http://-a-/x", "http://a//b",
    "http://a/b//", "http://a", "http://a/", "HTTP://a", "http://[::1]:8/x", "ftp://a", "http://a/%41",
    "http://a?x=1", "http://a#f", "http://a:/", "http://a:00080/p", "http://a/../b", "not a url",
    "https://open.bigmodel.cn/api/paas/v4", "http://user@a/x", "http://a b/", "http://a/b c",
]


def _httpx_parts(value: str) -> tuple[str, str, str] | None:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return None
    return url.scheme, url.host, url.path


@pytest.mark.parametrize("value", CASES)
def test_url_parts_are_httpx_urls_scheme_host_and_path(value: str) -> None:
    """url_parts gives what httpx.URL gives (None where httpx refuses), plain URL or not."""
    assert url_parts(value) == _httpx_parts(value)


def test_plain_urls_are_read_without_httpx() -> None:
    """The usual URLs (a loopback port, each provider's root) take the regular-expression path."""
    for value in ("http://127.0.0.1:9", "https://geekai.co/api/v1", "https://open.bigmodel.cn/api/paas/v4/"):
        assert _plain_parts(value) == _httpx_parts(value)


def test_provider_tables_are_the_providers_labels_roots_and_key_variables() -> None:
    """PROVIDER_ROOTS and KEY_VARIABLES hold each Provider class's label, default_base_url and
    key_env_vars, in PROVIDERS order."""
    assert list(PROVIDER_ROOTS) == list(KEY_VARIABLES) == list(PROVIDERS)
    for name, (label, root) in PROVIDER_ROOTS.items():
        provider = get_provider(name)
        assert (label, root, KEY_VARIABLES[name]) == (
            provider.label, provider.default_base_url, provider.key_env_vars)


def test_unknown_provider_is_the_providers_usage_error() -> None:
    """A provider name no provider has is refused with get_provider's message."""
    from batchvid.providerinfo import check_base_url

    with pytest.raises(UsageError, match="unknown provider 'nope': use one of geekai, bigmodel"):
        check_base_url("http://127.0.0.1:9", "nope", "--base-url")


def test_a_cli_rerun_with_nothing_to_send_never_imports_httpx(tmp_path: Path) -> None:
    """`batchvid run` on a finished directory, with --base-url, loads neither httpx nor the
    providers (fresh interpreter, the whole command)."""
    path, out = tmp_path / "m.yaml", tmp_path / "out"
    path.write_text("version: 1\nname: t\nprovider: geekai\ndefaults:\n  model: cogvideox-flash\n"
                    "jobs:\n  - id: a\n    prompt: a fox\n")
    from batchvid.cli import main

    assert main(["run", str(path), "--out", str(out), "--simulate", "--sim-latency", "0",
                 "--no-progress"]) == 0
    code = f"""
import sys
from batchvid.cli import main
code = main(["run", {str(path)!r}, "--out", {str(out)!r}, "--base-url", "http://127.0.0.1:9",
             "--no-progress"])
print(code, [m for m in ("httpx", "batchvid.providers", "batchvid.transport") if m in sys.modules])
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "BATCHVID_BASE_URL"}
    env["GEEKAI_API_KEY"] = "sk-dummy"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parent.parent, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "0 []"
