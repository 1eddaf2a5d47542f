import pytest

from freezeframe.contracts.errors import SignatureError
from freezeframe.intake.accept import check_bearer


def test_the_right_bearer_token_passes() -> None:
    check_bearer({"Authorization": "Bearer s3cret-token"}, "s3cret-token")
    check_bearer({"authorization": "bearer s3cret-token"}, "s3cret-token")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic s3cret-token", "Bearer s3cret-token2",
                                    "Bearer s3cret-toke"])
def test_anything_else_is_refused_without_echoing_the_token(header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    with pytest.raises(SignatureError) as info:
        check_bearer(headers, "s3cret-token")
    assert "s3cret" not in str(info.value)


def basic(credentials: str) -> str:
    import base64

    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_alertmanager_accepts_bearer_or_basic_credentials() -> None:
    from freezeframe.intake.accept import check_bearer_or_basic

    check_bearer_or_basic({"Authorization": "Bearer am:s3cret"}, "am:s3cret")
    check_bearer_or_basic({"Authorization": basic("am:s3cret")}, "am:s3cret")


@pytest.mark.parametrize("header", [basic("am:wrong"), basic("am"), "Basic !!!not-base64", "Bearer am:wrong",
                                    "Digest am:s3cret", ""])
def test_alertmanager_refuses_other_credentials(header: str) -> None:
    from freezeframe.intake.accept import check_bearer_or_basic

    with pytest.raises(SignatureError) as info:
        check_bearer_or_basic({"Authorization": header}, "am:s3cret")
    assert "s3cret" not in str(info.value)
