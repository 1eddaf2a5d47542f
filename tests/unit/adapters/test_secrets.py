from pathlib import Path

import pytest

from freezeframe.adapters.secrets import alertmanager_token, api_token, pagerduty_secrets
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError


def test_the_environment_wins_then_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert alertmanager_token(Settings(alertmanager_token_env="from-env", alertmanager_token_file=token_file)) == (
        "from-env")
    assert alertmanager_token(Settings(alertmanager_token_file=token_file)) == "from-file"
    assert api_token(Settings(api_token_file=token_file)) == "from-file"


def test_nothing_configured_names_the_settings_without_any_value() -> None:
    with pytest.raises(ConfigError, match="FREEZEFRAME_API_TOKEN, FREEZEFRAME_API_TOKEN_FILE or "
                                          "FREEZEFRAME_API_TOKEN_SECRET_ARN"):
        api_token(Settings())
    with pytest.raises(ConfigError, match="cannot read"):
        alertmanager_token(Settings(alertmanager_token_file=Path("/nonexistent/token")))


def test_pagerduty_secrets_are_a_list_for_rotation(tmp_path: Path) -> None:
    assert pagerduty_secrets(Settings(pagerduty_secrets_env="old, new")) == ["old", "new"]
    secrets_file = tmp_path / "pd"
    secrets_file.write_text("one\ntwo\n\n")
    assert pagerduty_secrets(Settings(pagerduty_secrets_file=secrets_file)) == ["one", "two"]
    with pytest.raises(ConfigError, match="empty"):
        pagerduty_secrets(Settings(pagerduty_secrets_env=" , "))
