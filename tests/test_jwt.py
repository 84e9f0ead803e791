from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from aioscopedauth import AuthDataError, IdTokenInfo, PlanType, decode_jwt_payload, jwt_expiration
from aioscopedauth.testing import make_id_token, make_jwt


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_decode_payload_of_unsigned_jwt() -> None:
    assert decode_jwt_payload(make_jwt({"a": 1, "b": "x"})) == {"a": 1, "b": "x"}


def test_extra_parts_are_ignored() -> None:
    assert decode_jwt_payload(make_jwt({"a": 1}) + ".more.parts") == {"a": 1}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "onlyone",
        "two.parts",
        ".payload.sig",
        "head..sig",
        "head.payload.",
    ],
)
def test_malformed_shape_is_invalid_id_token_format(token: str) -> None:
    with pytest.raises(AuthDataError, match=r"^invalid ID token format$"):
        decode_jwt_payload(token)


def test_padded_payload_is_rejected_like_codex() -> None:
    payload = base64.urlsafe_b64encode(b'{"a":1}').decode()  # ends with '='
    assert payload.endswith("=")
    with pytest.raises(AuthDataError, match="unpadded base64url"):
        decode_jwt_payload(f"h.{payload}.s")


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("!!!!", "not base64url-encoded JSON"),
        (base64.urlsafe_b64encode(b"not json").rstrip(b"=").decode(), "not base64url-encoded JSON"),
        (_b64([1, 2]), "not a JSON object"),
        (_b64("str"), "not a JSON object"),
    ],
)
def test_bad_payload_says_what_is_wrong(payload: str, problem: str) -> None:
    with pytest.raises(AuthDataError, match=problem) as info:
        decode_jwt_payload(f"h.{payload}.s")
    assert payload not in str(info.value)


def test_error_never_quotes_the_token() -> None:
    secret = "h.SECRETPAYLOAD.s"
    with pytest.raises(AuthDataError) as info:
        decode_jwt_payload(secret)
    assert "SECRETPAYLOAD" not in str(info.value)


def test_id_token_claims() -> None:
    jwt = make_id_token(plan_type="pro", account_id="org-1")
    info = IdTokenInfo.parse(jwt)
    assert info.email == "user@example.com"
    assert info.chatgpt_plan_type == PlanType.PRO
    assert info.chatgpt_user_id == "user-12345"
    assert info.chatgpt_account_id == "org-1"
    assert info.raw_jwt == jwt
    assert jwt not in repr(info)


def test_email_falls_back_to_profile_claim() -> None:
    jwt = make_jwt({"https://api.openai.com/profile": {"email": "p@example.com"}})
    assert IdTokenInfo.parse(jwt).email == "p@example.com"


def test_user_id_falls_back_to_user_id() -> None:
    jwt = make_jwt({"https://api.openai.com/auth": {"user_id": "u-9"}})
    assert IdTokenInfo.parse(jwt).chatgpt_user_id == "u-9"


def test_missing_auth_claim_leaves_fields_none() -> None:
    info = IdTokenInfo.parse(make_jwt({"email": "e@example.com"}))
    assert (info.chatgpt_plan_type, info.chatgpt_user_id, info.chatgpt_account_id) == (
        None,
        None,
        None,
    )


def test_claim_of_wrong_type_is_an_error() -> None:
    with pytest.raises(AuthDataError, match="the email claim is not a string"):
        IdTokenInfo.parse(make_jwt({"email": 5}))


# Reference checklist 19-23.
def test_plan_type_maps_known_plan() -> None:
    assert IdTokenInfo.parse(make_id_token(plan_type="pro")).plan_type == PlanType.PRO


def test_plan_type_maps_self_serve_business_usage_based_plan() -> None:
    info = IdTokenInfo.parse(make_id_token(plan_type="self_serve_business_usage_based"))
    assert info.plan_type == PlanType.SELF_SERVE_BUSINESS_USAGE_BASED


def test_plan_type_maps_enterprise_cbp_usage_based_plan() -> None:
    info = IdTokenInfo.parse(make_id_token(plan_type="enterprise_cbp_usage_based"))
    assert info.plan_type == PlanType.ENTERPRISE_CBP_USAGE_BASED


def test_plan_type_maps_unknown_to_unknown() -> None:
    plan = IdTokenInfo.parse(make_id_token(plan_type="mystery-tier")).plan_type
    assert plan == PlanType.unknown("mystery-tier")
    assert not plan.known
    assert repr(plan) == "PlanType.unknown('mystery-tier')"


def test_missing_plan_type_maps_to_unknown() -> None:
    info = IdTokenInfo.parse(make_id_token(plan_type=None))
    assert info.chatgpt_plan_type is None
    assert info.plan_type == PlanType.unknown("unknown")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PRO", PlanType.PRO),
        (" Team ", PlanType.TEAM),
        ("hc", PlanType.ENTERPRISE),
        ("Education", PlanType.EDU),
        ("edu", PlanType.EDU),
        ("go", PlanType.GO),
        ("prolite", PlanType.PROLITE),
        ("weird", PlanType.unknown("weird")),
    ],
)
def test_plan_from_raw_value_is_case_insensitive_with_aliases(raw: str, expected: PlanType) -> None:
    assert PlanType.from_raw_value(raw) == expected


def test_claim_parsing_is_exact_like_serde() -> None:
    assert PlanType.from_claim("PRO") == PlanType.unknown("PRO")
    assert str(PlanType.PRO) == "pro"
    assert repr(PlanType.BUSINESS) == "PlanType.BUSINESS"


def test_access_token_expiry() -> None:
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    assert jwt_expiration(make_jwt({"exp": int(moment.timestamp())})) == moment
    assert jwt_expiration(make_jwt({"sub": "x"})) is None


@pytest.mark.parametrize("exp", ["tomorrow", True, [1], 10**30])
def test_bad_exp_is_an_error(exp: object) -> None:
    with pytest.raises(AuthDataError, match="exp claim"):
        jwt_expiration(make_jwt({"exp": exp}))


def test_opaque_access_token_has_no_expiry_but_errors() -> None:
    with pytest.raises(AuthDataError, match="invalid ID token format"):
        jwt_expiration("opaque-token")
