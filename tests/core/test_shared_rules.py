"""One test per rule that both engines share (each engine's own tests assert it end to end)."""

from __future__ import annotations

from canfar_core.errors import AuthenticationError, PermissionDeniedError
from canfar_core.refusals import is_refusal, refusal_sentence


def test_a_401_says_renew_and_a_403_says_whom_to_ask() -> None:
    unauthorized = AuthenticationError(401, "Unauthorized")
    forbidden = PermissionDeniedError(403, "Not authorized to use the skaha system")
    assert is_refusal(unauthorized) and is_refusal(forbidden)
    assert refusal_sentence(unauthorized, where="https://x/skaha/v1", source="--canfar-token") == (
        "CANFAR at https://x/skaha/v1 refused the credentials from --canfar-token "
        "(Unauthorized); renew them with `canfar login`."
    )
    assert refusal_sentence(
        unauthorized, where="w", source="s", also="update the CANFAR credentials block"
    ).endswith("renew them with `canfar login` or update the CANFAR credentials block.")
    assert refusal_sentence(forbidden, where="w", source="s") == (
        "CANFAR at w accepted the credentials from s but denied access (Not authorized to use "
        "the skaha system): this account may not use the platform; ask CANFAR support "
        "(support@canfar.net) for access."
    )
