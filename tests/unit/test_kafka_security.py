"""Kafka security settings: they become exactly the aiokafka keyword arguments and Faust credentials
the clients use (read back from clients built with them, without connecting), contradictions are
refused with a clear error, and no password shows in a repr, an error or a log line."""

from __future__ import annotations

import asyncio
import logging
import ssl

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from aimass.kafka import KafkaSecurityError, client_options, make_app, start_producer
from aimass.processes import free_port
from aimass.settings import GatewaySettings, Settings, SinkSettings
from tls_certs import make_ca, make_cert

PASSWORD = "s3cret-Pa55word-that-must-not-leak"
KEY_PASSWORD = "key-Pa55-that-must-not-leak"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os
    for k in list(os.environ):
        if k.startswith("AIMASS_KAFKA_") or k == "AIMASS_CONFIG":
            monkeypatch.delenv(k)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "test-ca")
    cert, key = make_cert(d, ca, "svc-detector", client=True, key_password=KEY_PASSWORD)
    return {"ca": ca.cert, "cert": cert, "key": key}


def _sasl_ssl(pki, **kw) -> Settings:
    return Settings(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=pki["ca"], kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username="svc-detector", kafka_sasl_password=PASSWORD, **kw)


def _client_config(client) -> dict:
    return {k: getattr(client, f"_{k}") for k in ("security_protocol", "ssl_context", "sasl_mechanism",
                                                   "sasl_plain_username", "sasl_plain_password")}


def test_plaintext_is_the_default_and_adds_nothing():
    assert client_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert make_app("t-plain", Settings()).conf.broker_credentials is None


def test_sasl_ssl_settings_reach_every_aiokafka_client_intact(pki):
    settings = _sasl_ssl(pki, kafka_ssl_certfile=pki["cert"], kafka_ssl_keyfile=pki["key"],
                         kafka_ssl_password=KEY_PASSWORD)

    async def build():
        opts = client_options(settings)
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **opts)
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id=None, **opts)
        admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:1", **opts)
        try:
            return [_client_config(c) for c in (producer.client, consumer._client, admin._client)]
        finally:
            await producer.stop()
            await consumer.stop()
            await admin.close()

    for cfg in asyncio.run(build()):
        ctx = cfg.pop("ssl_context")
        assert cfg == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "svc-detector", "sasl_plain_password": PASSWORD}
        assert isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is True
        assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "test-ca"),),)]  # our CA only


def test_faust_gets_the_same_credentials(pki):
    settings = _sasl_ssl(pki)
    app = make_app("t-sasl", settings)
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.protocol.value, creds.mechanism.value, creds.username, creds.password) == \
        ("SASL_SSL", "SCRAM-SHA-512", "svc-detector", PASSWORD)
    # What Faust's aiokafka driver passes to each consumer and producer it creates:
    driver = dict(credentials_to_aiokafka_auth(creds))
    ours = client_options(settings)
    assert isinstance(driver.pop("ssl_context"), ssl.SSLContext) and ours.pop("ssl_context")
    assert driver == ours

    tls_only = make_app("t-ssl", Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"]))
    assert isinstance(tls_only.conf.broker_credentials, faust.SSLCredentials)
    auth = credentials_to_aiokafka_auth(tls_only.conf.broker_credentials)
    assert auth["security_protocol"] == "SSL" and auth["ssl_context"].get_ca_certs()[0]["subject"] == \
        ((("commonName", "test-ca"),),)


def test_sasl_plaintext_with_the_password_from_a_file_and_lower_case_names(tmp_path, monkeypatch):
    f = tmp_path / "kafka-password"
    f.write_text(f"  {PASSWORD}\n")
    monkeypatch.setenv("AIMASS_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("AIMASS_KAFKA_SASL_MECHANISM", "scram_sha_256")
    monkeypatch.setenv("AIMASS_KAFKA_SASL_USERNAME", "gw-7")
    monkeypatch.setenv("AIMASS_KAFKA_SASL_PASSWORD_FILE", str(f))
    opts = client_options(GatewaySettings())
    assert opts == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                    "sasl_plain_username": "gw-7", "sasl_plain_password": PASSWORD}
    f.unlink()
    with pytest.raises(KafkaSecurityError, match="kafka_sasl_password_file .* cannot be read"):
        client_options(GatewaySettings())


def test_tls_options(pki):
    ctx = client_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"],
                                  kafka_ssl_check_hostname=False))["ssl_context"]
    assert ctx.check_hostname is False and ctx.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
    system = client_options(Settings(kafka_security_protocol="SSL"))["ssl_context"]  # no CA file: system store
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname is True


@pytest.mark.parametrize("kw, words", [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_password": PASSWORD}, "kafka_sasl_username is empty"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"}, "neither kafka_sasl_password"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD}, "SASL credentials set but kafka_security_protocol is PLAINTEXT"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_ssl_cafile": "/ca.pem", "kafka_sasl_username": "u",
      "kafka_sasl_password": PASSWORD}, "kafka_ssl_cafile set but kafka_security_protocol is SASL_PLAINTEXT"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"}, "without kafka_ssl_certfile"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_password": PASSWORD}, "no client key"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u", "kafka_sasl_password": PASSWORD,
      "kafka_sasl_password_file": "/pw"}, "both kafka_sasl_password and kafka_sasl_password_file"),
    ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
])
def test_contradictions_are_refused_without_echoing_secrets(kw, words):
    with pytest.raises(ValidationError) as err:
        SinkSettings(**kw)
    assert words in str(err.value)
    assert PASSWORD not in str(err.value) and PASSWORD not in repr(err.value)


def test_unusable_files_are_refused_clearly(pki, tmp_path):
    with pytest.raises(KafkaSecurityError, match=r"kafka_ssl_cafile .*missing\.pem is not a readable file"):
        client_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem"))
    wrong = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"], kafka_ssl_certfile=pki["cert"],
                     kafka_ssl_keyfile=pki["key"], kafka_ssl_password="not-the-key-password")
    with pytest.raises(KafkaSecurityError, match="cannot set up TLS") as err:
        client_options(wrong)
    assert "not-the-key-password" not in str(err.value)
    no_password = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=pki["ca"], kafka_ssl_certfile=pki["cert"],
                           kafka_ssl_keyfile=pki["key"])
    with pytest.raises(KafkaSecurityError):  # refused at once; never an interactive password prompt
        client_options(no_password)


def test_no_password_in_reprs_or_logs(pki, caplog):
    settings = _sasl_ssl(pki, kafka_ssl_certfile=pki["cert"], kafka_ssl_keyfile=pki["key"],
                         kafka_ssl_password=KEY_PASSWORD)
    caplog.set_level(logging.DEBUG)
    opts = client_options(settings)
    app = make_app("t-logs", settings)
    port = free_port("127.0.0.1")  # nothing listens: the producer's start fails and logs why

    async def start():
        with pytest.raises(Exception):
            await start_producer(settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"}),
                                 request_timeout_ms=2000)
    asyncio.run(start())
    shown = [repr(settings), str(settings), repr(settings.model_dump()), repr(opts), str(opts),
             repr(app.conf.broker_credentials), caplog.text]
    assert caplog.records, "the failed start should have logged something to check"
    for text in shown:
        assert PASSWORD not in text and KEY_PASSWORD not in text
    assert opts["sasl_plain_password"] == PASSWORD  # the value itself is intact for aiokafka
