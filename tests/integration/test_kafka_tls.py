"""The Kafka clients' TLS path, for real: a TLS terminator (stunnel) in front of a dedicated tansu
broker that advertises the terminator's address, so every client connection (bootstrap and the broker
connections the metadata points to) is TLS, verified against a test CA. The broker itself has no
working TLS in this build (DESIGN.md), which is why the terminator is there.

Proved here: topics are created, the detector and sink workers (Faust, state and control readers)
and a producer run the pipeline over TLS into ClickHouse; the gateway sends over TLS; a client without
the CA, with another CA, or in plain text is refused, and the certificate's host name is checked."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from aiokafka.errors import KafkaConnectionError

from aimass import contracts, stack
from aimass.clickhouse.client import connect, query_rows
from aimass.kafka import client_options, create_topics, start_producer, topic_partitions
from aimass.processes import free_port, pid_alive, stop_pid
from aimass.settings import GatewaySettings, Settings
from conftest import Namespace, Workers, wait_until
from tls_certs import make_ca, make_cert

pytestmark = pytest.mark.integration


@dataclass
class TlsBroker:
    bootstrap: str  # the stunnel address: the only one clients know
    ca: Path
    other_ca: Path
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {"AIMASS_KAFKA_BOOTSTRAP": self.bootstrap, "AIMASS_KAFKA_SECURITY_PROTOCOL": "SSL",
                "AIMASS_KAFKA_SSL_CAFILE": str(self.ca), **extra}


def _stunnel() -> str:
    exe = shutil.which("stunnel4") or shutil.which("stunnel")
    if exe is None:
        pytest.skip("stunnel is not installed (Debian's stunnel4; `make stunnel` installs it as root)")
    return exe


def _handshake(port: int, ca: Path, server_hostname: str = "127.0.0.1", check_hostname: bool = True) -> None:
    """One TLS handshake with the terminator, verified the way the clients verify (client_options)."""
    ctx = client_options(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca,
                                  kafka_ssl_check_hostname=check_hostname))["ssl_context"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname):
            pass


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    exe = _stunnel()
    d = tmp_path_factory.mktemp("kafka-tls")
    ca = make_ca(d, "aimass-test-ca")
    other = make_ca(d / "other", "someone-elses-ca")
    cert, key = make_cert(d, ca, "kafka-broker", dns=("localhost",), ips=("127.0.0.1",))
    tls_port = free_port("127.0.0.1")
    broker_pid, broker_port = stack.start_broker(d, advertised_listener_url=f"tcp://127.0.0.1:{tls_port}")
    log = d / "stunnel.log"
    conf = d / "stunnel.conf"
    conf.write_text(f"foreground = yes\npid =\noutput = {log}\ndebug = notice\nsyslog = no\n\n[kafka]\n"
                    f"accept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{broker_port}\n"
                    f"cert = {cert}\nkey = {key}\n")
    proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        end, last = time.monotonic() + 15, None
        while True:  # ready = a verified TLS handshake succeeds
            if proc.poll() is not None:
                raise RuntimeError(f"stunnel exited with code {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
            try:
                _handshake(tls_port, ca.cert)
                break
            except OSError as exc:
                last = exc
                if time.monotonic() > end:
                    raise RuntimeError(f"stunnel did not accept TLS on {tls_port} within 15 s ({last})") from None
                time.sleep(0.05)
        yield TlsBroker(f"127.0.0.1:{tls_port}", ca.cert, other.cert, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        stop_pid(broker_pid)
    assert proc.returncode is not None and not pid_alive(broker_pid), "stunnel or the broker outlived the test"


@pytest.fixture(scope="module")
def tls_pipeline(tls_broker, local_stack, tmp_path_factory):
    """A namespace on the TLS broker and the session's ClickHouse, its topics created over TLS, and the
    detector and sink workers running over TLS."""
    ns = Namespace(local_stack)
    ns.env.update(tls_broker.env())
    settings = Settings(kafka_bootstrap=tls_broker.bootstrap, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=tls_broker.ca, clickhouse_url=ns.clickhouse_url, topic_prefix=ns.topic_prefix)
    created = asyncio.run(create_topics(settings))
    assert sorted(created) == sorted(settings.topic(t) for t in topic_partitions(settings))
    stack.prepare(settings, topics=False)  # the ClickHouse migrations
    workers = Workers(tmp_path_factory.mktemp("tls-workers"), ns.env)
    try:
        workers.start("detector", "sink", deadline_s=90)
        yield ns, settings, workers
    finally:
        workers.stop()


def _image(i: int) -> np.ndarray:
    img = np.full((240, 320, 3), 40 + i, np.uint8)
    img[60:180, 100 + i: 140 + i] = 200
    return img


def _frames(client, camera: str) -> int:
    return query_rows(client, f"SELECT count() FROM frames FINAL WHERE camera_id = '{camera}'")[1][0][0]


def test_pipeline_runs_over_tls_with_verification(tls_pipeline, tls_broker):
    ns, settings, workers = tls_pipeline
    from aimass_gateway.producer import encode_jpeg

    async def send():
        producer = await start_producer(settings)
        try:
            for seq in range(8):
                msg = contracts.Frame(site_id="tls-site", camera_id="cam-tls", seq=seq, captured_ms=contracts.now_ms(),
                                      width=320, height=240, jpeg=encode_jpeg(_image(seq), 80),
                                      stamps={"captured": contracts.now_ms(), "sent": contracts.now_ms()})
                await producer.send_and_wait(settings.topic(contracts.TOPIC_FRAMES), contracts.encode(msg), key=b"cam-tls")
        finally:
            await producer.stop()
    asyncio.run(send())
    ch = connect(ns.clickhouse_url)
    try:
        wait_until(lambda: _frames(ch, "cam-tls") == 8, 60, f"8 frames over TLS in ClickHouse\n{workers.logs()}")
        _, rows = query_rows(ch, "SELECT min(seq), max(seq), any(model_name) FROM frames FINAL WHERE camera_id = 'cam-tls'")
        assert rows == [(0, 7, "nanodet-g-416")]
    finally:
        ch.disconnect()
    accepted = tls_broker.log.read_text(errors="replace").count("accepted connection")
    assert accepted >= 4, "the workers' and producer's connections should all have gone through the TLS terminator"


def test_gateway_sends_over_tls(tls_pipeline):
    ns, settings, workers = tls_pipeline
    from aimass_gateway.producer import GatewayProducer
    gw_settings = GatewaySettings(kafka_bootstrap=settings.kafka_bootstrap, kafka_security_protocol="SSL",
                                  kafka_ssl_cafile=settings.kafka_ssl_cafile, topic_prefix=settings.topic_prefix,
                                  spool_max_bytes=0, send_timeout_s=5)  # no spool: a failed connection is an error

    async def send():
        gw = GatewayProducer(gw_settings, "tls-site")
        async with gw:
            for seq in range(5):
                await gw.send_frame("cam-tls-gw", seq, contracts.now_ms(), _image(seq))
        return gw
    gw = asyncio.run(send())
    assert gw.counters.frames == 5
    ch = connect(ns.clickhouse_url)
    try:
        wait_until(lambda: _frames(ch, "cam-tls-gw") == 5, 60, "the gateway's 5 frames over TLS in ClickHouse")
    finally:
        ch.disconnect()


@pytest.mark.parametrize("who", ["no CA (the system trust store)", "another CA"])
def test_a_client_that_cannot_verify_the_broker_is_refused(tls_broker, who, caplog):
    settings = Settings(kafka_bootstrap=tls_broker.bootstrap, kafka_security_protocol="SSL",
                        kafka_ssl_cafile=None if who.startswith("no CA") else tls_broker.other_ca)
    with pytest.raises(ssl.SSLCertVerificationError) as err:  # the handshake itself, as the clients do it
        with socket.create_connection(("127.0.0.1", int(tls_broker.bootstrap.rsplit(":", 1)[1])), timeout=5) as raw:
            client_options(settings)["ssl_context"].wrap_socket(raw, server_hostname="127.0.0.1")
    assert err.value.reason == "CERTIFICATE_VERIFY_FAILED"
    assert "certificate" in err.value.verify_message  # 'self-signed certificate in certificate chain' / issuer
    caplog.set_level(logging.DEBUG, logger="aiokafka")

    async def start():
        with pytest.raises(KafkaConnectionError):
            await start_producer(settings, request_timeout_ms=5000)
    asyncio.run(start())  # and the Kafka client built from the same settings cannot connect
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_a_plain_text_client_is_refused(tls_broker):
    async def start():
        with pytest.raises(KafkaConnectionError):
            await start_producer(Settings(kafka_bootstrap=tls_broker.bootstrap), request_timeout_ms=5000)
    asyncio.run(start())


def test_the_certificate_must_name_the_host(tls_broker):
    port = int(tls_broker.bootstrap.rsplit(":", 1)[1])
    _handshake(port, tls_broker.ca, server_hostname="localhost")  # a name in the certificate
    with pytest.raises(ssl.SSLCertVerificationError, match="[Hh]ostname mismatch"):
        _handshake(port, tls_broker.ca, server_hostname="kafka.elsewhere.example")
    _handshake(port, tls_broker.ca, server_hostname="kafka.elsewhere.example", check_hostname=False)  # the opt-out
