import pytest

from aimass.clickhouse.client import ClickHouseURLError, parse_url


def test_full_url():
    t = parse_url("clickhouse://sink:s%40cret@ch.example:9440/analytics")
    assert (t.host, t.port, t.database, t.user, t.password) == ("ch.example", 9440, "analytics", "sink", "s@cret")
    assert "s@cret" not in repr(t)


def test_defaults_and_bare_host(monkeypatch):
    monkeypatch.delenv("AIMASS_CLICKHOUSE_PASSWORD", raising=False)
    t = parse_url("127.0.0.1")
    assert (t.host, t.port, t.database, t.user, t.password) == ("127.0.0.1", 9000, "default", "default", "")


def test_password_from_env_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AIMASS_CLICKHOUSE_PASSWORD", "from-env")
    assert parse_url("clickhouse://u@h/db").password == "from-env"
    monkeypatch.delenv("AIMASS_CLICKHOUSE_PASSWORD")
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    monkeypatch.setenv("AIMASS_CLICKHOUSE_PASSWORD_FILE", str(f))
    assert parse_url("clickhouse://u@h/db").password == "from-file"


@pytest.mark.parametrize("url, words", [("http://h:8123/db", "scheme"), ("clickhouse:///db", "no host"),
                                        ("clickhouse://h:port/db", "not a number")])
def test_bad_urls_say_what_is_wrong(url, words):
    with pytest.raises(ClickHouseURLError, match=words):
        parse_url(url)
