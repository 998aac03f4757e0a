"""The settings are declared once (config.py): defaults load, bad values name their
variable, no variable is declared twice, and README's table is the generated one."""

from __future__ import annotations

import dataclasses

import pytest

import config
from config import ConfigError, declarations, load_config, spec_of


def test_defaults_load(tmp_path):
    loaded = load_config({"GATEHOUSE_DATA_DIR": str(tmp_path)})
    assert loaded.env == "development" and not loaded.production
    assert loaded.server.port == 8000 and loaded.database.data_dir == tmp_path
    assert loaded.sessions.session_idle_seconds == 7 * 24 * 3600 and loaded.codes.code_ttl == 300
    assert loaded.jwt.lifetime("v1") == config.StyleLifetimes(access=1800, refresh=14400)
    assert loaded.passwords.bcrypt_threads >= 1 and len(loaded.secret_key) >= 48
    for group, f in declarations():
        value = getattr(loaded if group is None else getattr(loaded, group), f.name)
        if f.name not in ("secret_key", "data_dir"):
            assert value == config._default(f), f.name


@pytest.mark.parametrize(
    "env, words",
    [
        ({"GATEHOUSE_SESSION_IDLE_SECONDS": "10"}, "GATEHOUSE_SESSION_IDLE_SECONDS must be between 60 and"),
        ({"GATEHOUSE_CODE_LENGTH": "six"}, "GATEHOUSE_CODE_LENGTH must be a whole number"),
        ({"GATEHOUSE_DRF_ACCESS_SECONDS": "5"}, "GATEHOUSE_DRF_ACCESS_SECONDS must be between 30 and"),
        ({"GATEHOUSE_LOG_FORMAT": "xml"}, "GATEHOUSE_LOG_FORMAT must be one of text, json"),
        ({"GATEHOUSE_SMS_COUNTRIES": "USA"}, "GATEHOUSE_SMS_COUNTRIES takes two-letter"),
        ({"GATEHOUSE_SESSION_IDLE_SECONDS": "7200", "GATEHOUSE_SESSION_MAX_SECONDS": "3600"}, "must not exceed"),
        ({"GATEHOUSE_JWT_ISSUER": "https://id.test", "GATEHOUSE_JWT_AUDIENCE": "https://id.test/refresh"}, "refresh"),
        ({"GATEHOUSE_JWT_SECRET": "é" * 15}, "GATEHOUSE_JWT_SECRET must be at least 32 bytes"),  # 30 bytes
        ({"GATEHOUSE_JWT_SECRET": "s" * 40, "SECRET_KEY": "s" * 40}, "must differ from SECRET_KEY"),
    ],
)
def test_a_bad_value_names_its_variable(tmp_path, env, words):
    with pytest.raises(ConfigError) as e:
        load_config({"GATEHOUSE_DATA_DIR": str(tmp_path), **env})
    assert words in str(e.value) and "\n" not in str(e.value)


def test_overrides_use_field_names_and_cross_checks_still_apply(tmp_path):
    env = {"GATEHOUSE_DATA_DIR": str(tmp_path)}
    loaded = load_config(env, code_cooldown=0, port=8123, login_failures_per_account=7)
    assert (loaded.codes.code_cooldown, loaded.server.port, loaded.throttle.login_failures_per_account) == (0, 8123, 7)
    with pytest.raises(ConfigError, match="must not exceed"):
        load_config(env, session_idle_seconds=3600, session_max_seconds=600)
    with pytest.raises(ConfigError, match="go together"):
        load_config(env, admin_username="root")
    with pytest.raises(TypeError, match="unknown settings: no_such_setting"):
        load_config(env, no_such_setting=1)


def test_each_setting_is_declared_once():
    names = [f.name for _, f in declarations()]
    variables = [spec_of(f).env for _, f in declarations()]
    assert len(names) == len(set(names)), "override names (field names) must be unique across groups"
    assert len(variables) == len(set(variables))
    for _, f in declarations():
        spec = spec_of(f)
        assert spec.doc and "\n" not in spec.doc, spec.env
        if type(config._default(f)) is int:
            assert spec.lo is not None and spec.hi is not None, spec.env
    groups = [f for f in dataclasses.fields(config.Config) if "group" in f.metadata]
    assert all(dataclasses.fields(f.metadata["group"]) for f in groups)


def test_readme_holds_the_generated_table():
    """README's configuration table is `python config.py --table`; run `python config.py
    --readme` after changing a declaration."""
    assert config.readme_table(config.README.read_text()) == config.settings_table()
    table = config.settings_table()
    for _, f in declarations():
        assert table.count(f"| `{spec_of(f).env}` | {config._shown(f)} |") == 1, spec_of(f).env


def test_the_jwt_secret_is_the_hs256_key_byte_for_byte_and_never_shown(tmp_path):
    from models.tokens import KeyRing, derived_secret

    secret = " django-insecure-!@#$%^&*(-_=+)é " * 2  # spaces kept: its bytes are the key
    loaded = load_config({"GATEHOUSE_DATA_DIR": str(tmp_path), "GATEHOUSE_JWT_SECRET": secret})
    assert loaded.jwt.jwt_secret == secret
    assert secret not in repr(loaded) and secret not in repr(loaded.jwt)
    keys = KeyRing(loaded.jwt, loaded.secret_key)
    assert keys.signing.alg == "HS256" and keys.signing.signing_key == secret.encode()
    assert str(secret.encode())[2:-1] not in repr(keys.signing) and secret not in repr(keys.by_kid)
    # The derived key (unset: the signing one) still verifies tokens signed before the switch.
    unset = KeyRing(load_config({"GATEHOUSE_DATA_DIR": str(tmp_path)}).jwt, loaded.secret_key)
    assert unset.signing.signing_key == derived_secret(loaded.secret_key)
    assert keys.by_kid[unset.signing.kid].verifying_key == unset.signing.verifying_key
