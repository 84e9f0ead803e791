"""The Kubernetes exec credential protocol, as client-go speaks it (issue 21 item 6).

The cases of client-go's ``TestRefreshCreds`` (plugin/pkg/client/auth/exec/exec_test.go) that
apply to a bearer-token source, each named after its client-go case, run against a real plugin:
a shell script that records the ``KUBERNETES_EXEC_INFO`` it got and whether its stdin is a
terminal, prints the answer it is told to and exits with the code it is told to (as client-go's
testdata/test-plugin.sh does). Inputs are compared as JSON; errors by client-go's own texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import pytest

from aioscopedauth import CommandBearerRefresher, CommandError, ConfigError, ProviderAuthCommand

from processes import ended

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

V1 = "client.authentication.k8s.io/v1"
BETA = "client.authentication.k8s.io/v1beta1"

PLUGIN = """#!/bin/sh
printf '%s' "$KUBERNETES_EXEC_INFO" > input.json
if [ -t 0 ]; then echo terminal > stdin; else echo other > stdin; fi
printf '%s' "$TEST_OUTPUT"
exit "${TEST_EXIT_CODE:-0}"
"""


def _credential(version: str, status: dict[str, Any] | None, kind: str = "ExecCredential") -> str:
    answer: dict[str, Any] = {"kind": kind, "apiVersion": version}
    if status is not None:
        answer["status"] = status
    return json.dumps(answer)


def _request(version: str, *, interactive: bool, cluster: dict[str, Any] | None = None) -> Any:
    spec: dict[str, Any] = {"interactive": interactive}
    if cluster is not None:
        spec["cluster"] = cluster
    return {"kind": "ExecCredential", "apiVersion": version, "spec": spec}


TOKEN = {"token": "foo-bar"}
CLUSTER = {
    "server": "foo",
    "tls-server-name": "bar",
    "certificate-authority-data": "YmF6",  # base64 of "baz", as client-go serialises bytes
    "config": {"apiVersion": "group/v1", "kind": "PluginConfig", "spec": {"audience": "snorlax"}},
}
CERT = "-----BEGIN CERTIFICATE-----\nMIIC6jCC\n-----END CERTIFICATE-----"
KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIB\n-----END RSA PRIVATE KEY-----"


@attrs.frozen
class Case:
    """One client-go case: the plugin's configuration, what it prints, what must happen."""

    version: str = BETA
    mode: str | None = "IfAvailable"
    stdin_unavailable: bool = False
    stdin_unavailable_message: str = ""
    terminal: bool = False
    cluster: dict[str, Any] | None = None
    provide_cluster_info: bool = False
    output: str = ""
    exit_code: int = 0
    command: str = "./test-plugin.sh"
    install_hint: str | None = None
    want_input: Any = None
    want_token: str | None = None
    want_expiry: datetime | None = None
    want_error: str | None = None


CASES: dict[str, Case] = {
    # client-go accepts a client certificate and key; a bearer-token source cannot send them,
    # so the same answer is refused here, saying why (adapted: the one deliberate difference).
    "beta-with-TLS-credentials": Case(
        output=_credential(BETA, {"clientKeyData": KEY, "clientCertificateData": CERT}),
        want_error="exec plugin returned a client certificate and key but no token; only "
        "status.token can be sent (as a bearer token)",
    ),
    "beta-with-bad-TLS-credentials": Case(
        output=_credential(BETA, {"clientKeyData": "foo", "clientCertificateData": "bar"}),
        want_error="exec plugin returned a client certificate and key but no token",
    ),
    "beta-cert-but-no-key": Case(
        output=_credential(BETA, {"clientCertificateData": CERT}),
        want_error="exec plugin returned only certificate or key, not both",
    ),
    "beta-basic-request": Case(
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-basic-request-with-never-interactive-mode": Case(
        mode="Never",
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-basic-request-with-never-interactive-mode-and-stdin-unavailable": Case(
        mode="Never",
        stdin_unavailable=True,
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-basic-request-with-if-available-interactive-mode": Case(
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-basic-request-with-if-available-interactive-mode-and-stdin-unavailable": Case(
        stdin_unavailable=True,
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-basic-request-with-if-available-interactive-mode-and-terminal": Case(
        terminal=True,
        want_input=_request(BETA, interactive=True),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-basic-request-with-if-available-interactive-mode-and-terminal-and-stdin-unavailable": (
        Case(
            stdin_unavailable=True,
            terminal=True,
            want_input=_request(BETA, interactive=False),
            output=_credential(BETA, TOKEN),
            want_token="foo-bar",
        )
    ),
    "beta-basic-request-with-always-interactive-mode": Case(
        mode="Always",
        want_error="exec plugin cannot support interactive mode: standard input is not a terminal",
    ),
    "beta-basic-request-with-always-interactive-mode-and-terminal-and-stdin-unavailable": Case(
        mode="Always",
        stdin_unavailable=True,
        terminal=True,
        want_error="exec plugin cannot support interactive mode: standard input is unavailable",
    ),
    "beta-basic-request-with-always-interactive-mode-and-terminal-and-stdin-unavailable-with-"
    "message": Case(
        mode="Always",
        stdin_unavailable=True,
        stdin_unavailable_message="some message",
        terminal=True,
        want_error="exec plugin cannot support interactive mode: standard input is "
        "unavailable: some message",
    ),
    "beta-basic-request-with-always-interactive-mode-and-terminal": Case(
        mode="Always",
        terminal=True,
        want_input=_request(BETA, interactive=True),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-expiry": Case(
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, {**TOKEN, "expirationTimestamp": "2006-01-02T15:04:05Z"}),
        want_token="foo-bar",
        want_expiry=datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC),
    ),
    "beta-no-group-version": Case(
        output=json.dumps({"kind": "ExecCredential", "status": TOKEN}),
        want_error="decoding stdout: Object 'apiVersion' is missing",
    ),
    "beta-no-status": Case(
        output=_credential(BETA, None),
        want_error="exec plugin didn't return a status field",
    ),
    "beta-no-token": Case(
        output=_credential(BETA, {}),
        want_error="exec plugin didn't return a token or cert/key pair",
    ),
    "unknown-binary": Case(
        command="does not exist",
        install_hint="some install hint",
        want_error="some install hint",
    ),
    "binary-fails": Case(exit_code=73, want_error="73"),
    "beta-with-cluster-and-provide-cluster-info-is-serialized": Case(
        provide_cluster_info=True,
        cluster=CLUSTER,
        want_input=_request(BETA, interactive=False, cluster=CLUSTER),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "beta-with-cluster-and-without-provide-cluster-info-is-not-serialized": Case(
        cluster=CLUSTER,
        want_input=_request(BETA, interactive=False),
        output=_credential(BETA, TOKEN),
        want_token="foo-bar",
    ),
    "v1-basic-request": Case(
        version=V1,
        want_input=_request(V1, interactive=False),
        output=_credential(V1, TOKEN),
        want_token="foo-bar",
    ),
    "v1-with-missing-interactive-mode": Case(
        version=V1,
        mode=None,
        want_error='exec plugin cannot support interactive mode: unknown interactiveMode: ""',
    ),
}


@contextlib.contextmanager
def _stdin(*, terminal: bool) -> Iterator[None]:
    """Make this process's stdin (fd 0) a real terminal for the block, or leave it as it is.

    pytest points fd 0 at /dev/null; client-go's isTerminal cases need a terminal there.
    """
    if not terminal:
        assert not os.isatty(0)
        yield
        return
    controller, terminal_fd = pty.openpty()
    saved = os.dup(0)
    try:
        os.dup2(terminal_fd, 0)
        yield
    finally:
        os.dup2(saved, 0)
        for fd in (saved, terminal_fd, controller):
            os.close(fd)


def _config(case: Case, folder: Path) -> ProviderAuthCommand:
    return ProviderAuthCommand(
        case.command,
        cwd=folder,
        env={"TEST_OUTPUT": case.output, "TEST_EXIT_CODE": str(case.exit_code)},
        exec_api_version=case.version,
        interactive_mode=case.mode,
        stdin_unavailable=case.stdin_unavailable,
        stdin_unavailable_message=case.stdin_unavailable_message,
        provide_cluster_info=case.provide_cluster_info,
        cluster=case.cluster,
        install_hint=case.install_hint,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_refresh_creds(tmp_path: Path, case: Case) -> None:
    """client-go's TestRefreshCreds, the case named by the test id."""
    plugin = tmp_path / "test-plugin.sh"
    plugin.write_text(PLUGIN)
    plugin.chmod(0o755)
    if case.mode is None and case.version == V1:
        # Found where the setting enters (client-go finds it at the first run).
        with pytest.raises(ConfigError) as error:
            _config(case, tmp_path)
        assert str(error.value) == case.want_error
        return
    config = _config(case, tmp_path)
    refresher = CommandBearerRefresher(config)
    with _stdin(terminal=case.terminal):
        if case.want_error is not None:
            with pytest.raises(CommandError) as info:
                await refresher.resolve()
            assert case.want_error in str(info.value)
            assert str(info.value).startswith(f"provider auth command `{case.command}`")
            assert "\n" not in str(info.value)
            return
        tokens = await refresher.resolve()
    assert tokens is not None
    assert tokens.access_token == case.want_token
    assert tokens.expires_at == case.want_expiry
    assert json.loads((tmp_path / "input.json").read_text()) == case.want_input
    # Interactive: the plugin got this process's terminal; else /dev/null.
    interactive = case.want_input["spec"]["interactive"]
    assert (tmp_path / "stdin").read_text() == ("terminal\n" if interactive else "other\n")


# -- beyond client-go's table: what the library adds or must also hold ------------------------


async def test_an_answer_of_another_api_version_is_refused_with_client_go_text(
    tmp_path: Path,
) -> None:
    case = Case(version=V1, output=_credential(BETA, TOKEN))
    (tmp_path / "test-plugin.sh").write_text(PLUGIN)
    (tmp_path / "test-plugin.sh").chmod(0o755)
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(_config(case, tmp_path)).resolve()
    assert str(info.value) == (
        "provider auth command `./test-plugin.sh`: exec plugin is configured to use API version "
        f"{V1}, plugin returned version {BETA}"
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            {"kind": "ExecCredential", "apiVersion": "CANARY-token-in-apiVersion", "status": {}},
            (
                f"exec plugin is configured to use API version {BETA}, plugin returned version "
                "(not an API version)"
            ),
        ),
        (
            {"kind": "CANARY-token-in-kind", "apiVersion": BETA, "status": TOKEN},
            (
                'decoding stdout: no kind other than "ExecCredential" is registered for version '
                f'"{BETA}"'
            ),
        ),
        ({"apiVersion": BETA, "status": TOKEN}, "decoding stdout: Object 'Kind' is missing"),
        (["CANARY-token-in-a-list"], "decoding stdout: couldn't get version/kind"),
    ],
    ids=["apiVersion", "kind", "no kind", "not an object"],
)
async def test_what_the_plugin_printed_is_never_quoted(
    tmp_path: Path, answer: object, message: str
) -> None:
    case = Case(output=json.dumps(answer))
    (tmp_path / "test-plugin.sh").write_text(PLUGIN)
    (tmp_path / "test-plugin.sh").chmod(0o755)
    with pytest.raises(CommandError) as info:
        await CommandBearerRefresher(_config(case, tmp_path)).resolve()
    assert message in str(info.value)
    assert "CANARY" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"exec_api_version": "client.authentication.k8s.io/v2"},
            "exec plugin: invalid apiVersion",
        ),
        (
            {"exec_api_version": BETA, "interactive_mode": "Sometimes"},
            'exec plugin cannot support interactive mode: unknown interactiveMode: "Sometimes"',
        ),
        (
            {"interactive_mode": "Never"},
            "provider auth interactive_mode need exec_api_version (an exec plugin)",
        ),
    ],
    ids=["unknown version", "unknown interactive mode", "exec settings without exec"],
)
def test_bad_exec_settings_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProviderAuthCommand("get-token", **options)
    assert message in str(info.value)


def test_the_exec_settings_are_read_from_the_config_file(tmp_path: Path) -> None:
    from aioscopedauth import load_providers  # noqa: PLC0415 -- only this test reads a file

    config = tmp_path / "config.toml"
    config.write_text(
        "[model_providers.k8s.auth]\n"
        'command = "get-token"\n'
        f'exec_api_version = "{V1}"\n'
        'interactive_mode = "Never"\n'
        "provide_cluster_info = true\n"
        'install_hint = "install get-token"\n'
        "[model_providers.k8s.auth.cluster]\n"
        'server = "https://k8s.example"\n'
    )
    auth = load_providers(config)["k8s"].auth
    assert auth is not None
    assert (auth.exec_api_version, auth.interactive_mode) == (V1, "Never")
    assert auth.provide_cluster_info is True
    assert auth.cluster == {"server": "https://k8s.example"}
    assert auth.install_hint == "install get-token"
    assert auth.exec_info(interactive=False) == (
        '{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",'
        '"spec":{"cluster":{"server":"https://k8s.example"},"interactive":false}}'
    )
    config.write_text('[model_providers.k8s.auth]\ncommand = "get-token"\nstdin_unavailable = 1\n')
    with pytest.raises(
        ConfigError, match=r"^model_providers.k8s: auth.stdin_unavailable must be true or false$"
    ):
        load_providers(config)


async def test_without_exec_api_version_nothing_changes(tmp_path: Path) -> None:
    # A plain command gets no KUBERNETES_EXEC_INFO and /dev/null for stdin, and may print any
    # of the plain formats (an ExecCredential of any version included).
    (tmp_path / "test-plugin.sh").write_text(PLUGIN)
    (tmp_path / "test-plugin.sh").chmod(0o755)
    config = ProviderAuthCommand(
        "./test-plugin.sh", cwd=tmp_path, env={"TEST_OUTPUT": _credential("v0", TOKEN)}
    )
    tokens = await CommandBearerRefresher(config).resolve()
    assert tokens is not None
    assert tokens.access_token == "foo-bar"
    assert (tmp_path / "input.json").read_text() == ""
    assert (tmp_path / "stdin").read_text() == "other\n"


async def test_an_interactive_plugin_that_hangs_is_killed_with_what_it_started(
    tmp_path: Path,
) -> None:
    # Interactive, the plugin shares our process group (it may read our terminal): killpg
    # would hit the test process itself; the plugin is killed alone, its child by the sweep.
    (tmp_path / "hang.sh").write_text(
        '#!/bin/sh\nsleep 60 &\necho "$$ $!" > pids.tmp\nmv pids.tmp pids\nwait\n'
    )
    (tmp_path / "hang.sh").chmod(0o755)
    config = ProviderAuthCommand(
        "./hang.sh", cwd=tmp_path, timeout=1.0, exec_api_version=BETA, interactive_mode="Always"
    )
    with _stdin(terminal=True), pytest.raises(CommandError, match="timed out after 1000 ms"):
        await CommandBearerRefresher(config).resolve()
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    assert len(pids) == 2
    assert [await asyncio.to_thread(ended, pid) for pid in pids] == [True, True]
