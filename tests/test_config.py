from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest

from aioscopedauth import (
    AuthManager,
    AuthMode,
    ConfigError,
    FileAuthStore,
    OAuthConfig,
    ProviderAuthCommand,
    load_providers,
    manager_for_provider,
)
from aioscopedauth.testing import chatgpt_auth, write_auth_json, write_token_script

if TYPE_CHECKING:
    from pathlib import Path

CODEX_CONFIG = """
model = "gpt-5"
model_provider = "corp-openai"

[model_providers.corp-openai]
name = "Corp OpenAI"
base_url = "https://gateway.example.com/openai"
wire_api = "responses"
requires_openai_auth = false

[model_providers.corp-openai.auth]
command = "./print-token.sh"
args = ["--audience", "api"]
timeout_ms = 2500
refresh_interval_ms = 0
cwd = "tools"

[model_providers.plain]
name = "Plain"
base_url = "https://plain.example.com/v1"
env_key = "PLAIN_API_KEY"

[profiles.fast]
model = "gpt-5-mini"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_codex_config_loads(tmp_path: Path) -> None:
    providers = load_providers(_write(tmp_path, CODEX_CONFIG))
    assert set(providers) == {"corp-openai", "plain"}
    corp = providers["corp-openai"]
    assert corp.name == "Corp OpenAI"
    assert corp.base_url == "https://gateway.example.com/openai"
    assert corp.options == {"wire_api": "responses"}
    assert corp.auth == ProviderAuthCommand(
        "./print-token.sh",
        args=("--audience", "api"),
        timeout=2.5,
        refresh_interval=0.0,
        cwd=tmp_path / "tools",
    )
    plain = providers["plain"]
    assert (plain.env_key, plain.auth) == ("PLAIN_API_KEY", None)


def test_defaults(tmp_path: Path) -> None:
    providers = load_providers(_write(tmp_path, '[model_providers.p.auth]\ncommand = "gcloud"\n'))
    auth = providers["p"].auth
    assert auth is not None
    assert (auth.timeout, auth.refresh_interval, auth.cwd, auth.args) == (5.0, 300.0, tmp_path, ())
    assert providers["p"].name == "p"


def test_no_providers(tmp_path: Path) -> None:
    assert load_providers(_write(tmp_path, 'model = "x"\n')) == {}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('command = "  "', "model_providers.p: provider auth.command must not be empty"),
        ("args = []", "model_providers.p: provider auth.command must be a string"),
        (
            'command = "x"\ntimeout_ms = 0',
            "model_providers.p: auth.timeout_ms must be greater than zero",
        ),
        (
            'command = "x"\ntimeout_ms = -5',
            "model_providers.p: auth.timeout_ms must be greater than zero",
        ),
        (
            'command = "x"\ntimeout_ms = "5"',
            "model_providers.p: auth.timeout_ms must be an integer",
        ),
        (
            'command = "x"\nrefresh_interval_ms = -1',
            "model_providers.p: auth.refresh_interval_ms must not be negative",
        ),
        ('command = "x"\nargs = "a b"', "model_providers.p: auth.args must be a list of strings"),
        ('command = "x"\nargs = [1]', "model_providers.p: auth.args must be a list of strings"),
        ('command = "x"\ncwd = 5', "model_providers.p: auth.cwd must be a string"),
    ],
)
def test_auth_table_errors(tmp_path: Path, table: str, message: str) -> None:
    path = _write(tmp_path, f"[model_providers.p.auth]\n{table}\n")
    with pytest.raises(ConfigError) as info:
        load_providers(path)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("extra", "conflicts"),
    [
        ('env_key = "K"', "env_key"),
        ('experimental_bearer_token = "t"', "experimental_bearer_token"),
        ("requires_openai_auth = true", "requires_openai_auth"),
        (
            'env_key = "K"\nexperimental_bearer_token = "t"\nrequires_openai_auth = true',
            "env_key, experimental_bearer_token, requires_openai_auth",
        ),
    ],
)
def test_auth_conflicts(tmp_path: Path, extra: str, conflicts: str) -> None:
    path = _write(
        tmp_path, f'[model_providers.p]\n{extra}\n[model_providers.p.auth]\ncommand = "x"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_providers(path)
    assert (
        str(info.value) == f"model_providers.p: provider auth cannot be combined with {conflicts}"
    )


def test_requires_openai_auth_false_is_no_conflict(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[model_providers.p]\nrequires_openai_auth = false\n"
        '[model_providers.p.auth]\ncommand = "x"\n',
    )
    assert load_providers(path)["p"].auth is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_providers = 5", "model_providers must be a table"),
        ("[model_providers]\np = 5", "model_providers.p: must be a table"),
        ('[model_providers.p]\nauth = "x"', "model_providers.p: auth must be a table"),
        ("[model_providers.p]\nname = 1", "model_providers.p: name must be a string"),
        ('[model_providers.p]\nrequires_openai_auth = "yes"', "requires_openai_auth must be true"),
        ("[model_providers.p\n", "is not valid TOML"),
    ],
)
def test_document_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_providers(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Could not read the config file .*missing\.toml"):
        load_providers(tmp_path / "missing.toml")


def test_unknown_auth_keys_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, '[model_providers.p.auth]\ncommand = "x"\nshell = true\n')
    assert load_providers(path)["p"].auth is not None
    assert "model_providers.p.auth: ignoring unknown keys shell" in caplog.text


def test_bearer_token_is_not_in_repr(tmp_path: Path) -> None:
    path = _write(tmp_path, '[model_providers.p]\nexperimental_bearer_token = "SECRET-XYZ"\n')
    provider = load_providers(path)["p"]
    assert provider.experimental_bearer_token == "SECRET-XYZ"
    assert "SECRET-XYZ" not in repr(provider)


async def test_manager_for_provider(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_auth_json(home, chatgpt_auth())
    write_token_script(tmp_path / "tools", "provider-token")
    providers = load_providers(_write(tmp_path, CODEX_CONFIG))
    async with AuthManager(FileAuthStore(home), OAuthConfig("http://127.0.0.1:9/x", "c")) as base:
        assert manager_for_provider(base, providers["plain"]) is base
        derived = manager_for_provider(base, providers["corp-openai"])
        assert derived is not base
        auth = await derived.auth()
        assert auth is not None
        assert (auth.mode, auth.token) == (AuthMode.BEARER, "provider-token")
        base_auth = await base.auth()
        assert base_auth is not None
        assert base_auth.mode is AuthMode.CHATGPT
        # Each call makes a new token cache.
        again = manager_for_provider(base, providers["corp-openai"])
        assert again.external_auth is not derived.external_auth


def test_command_arguments_are_not_in_the_provider_repr(tmp_path: Path) -> None:
    # Issue 20 item 12: the provider's repr holds its command's; neither shows an argument.
    path = _write(
        tmp_path,
        '[model_providers.p.auth]\ncommand = "mint"\nargs = ["--secret", "ARG-CANARY-77e1"]\n',
    )
    provider = load_providers(path)["p"]
    assert provider.auth is not None
    assert provider.auth.args == ("--secret", "ARG-CANARY-77e1")
    for text in (repr(provider), str(provider), repr(provider.auth)):
        assert "ARG-CANARY-77e1" not in text
        assert "--secret" not in text
    assert "command='mint', args=<2 arguments>" in repr(provider)
