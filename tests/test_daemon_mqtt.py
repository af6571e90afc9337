"""MQTT publisher against a real mosquitto: queueing through outages, will/online/stopped, credentials."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from daemon_fixtures import REPO, Broker, Collector, broker, collector, wait_for  # noqa: F401

from daemon.mqtt_events import EventPublisher
from daemon.settings import MqttSettings


def settings_for(b: Broker, **kw: object) -> MqttSettings:
    base = {"host": b.host, "port": b.port, "line_id": "t", "reconnect_min_delay_s": 1, "reconnect_max_delay_s": 1}
    return MqttSettings(**{**base, **kw})


def retained(b: Broker, topic: str, **auth: str) -> str | None:
    """The retained payload of ``topic`` as a new subscriber sees it."""
    got: list[str] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if auth:
        c.username_pw_set(auth["username"], auth["password"])
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
    c.on_message = lambda cl, u, m: got.append(m.payload.decode()) if m.retain else None
    c.connect(b.host, b.port)
    c.loop_start()
    wait_for(lambda: bool(got), 2)
    c.loop_stop()
    c.disconnect()
    return got[-1] if got else None


def test_events_published_while_the_broker_is_down_arrive_after_it_returns(
    broker: Broker, collector: Collector
) -> None:
    pub = EventPublisher(settings_for(broker)).start()
    assert pub.wait_connected(5)
    for i in range(5):
        pub.publish("items", {"seq": i})
    assert wait_for(lambda: len(collector.on("items")) == 5, 5)
    broker.stop()
    assert wait_for(lambda: not pub.connected, 5)
    for i in range(5, 30):
        pub.publish("items", {"seq": i})
        time.sleep(0.05)
    time.sleep(1.5)  # outage of ~3 s in total (the daemon tests use the same; see docs/daemon.md)
    assert pub.pending() >= 25 - 5
    broker.start()
    assert wait_for(lambda: {m["seq"] for m in collector.on("items")} == set(range(30)), 15)
    assert pub.stop(flush_timeout_s=5)


def test_no_broker_at_start_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    b = Broker(tmp_path).start()
    c = Collector(b.host, b.port, topic="wastesort/t/#").start()  # an operator's persistent session
    b.stop()
    links: list[tuple[bool, str]] = []
    pub = EventPublisher(settings_for(b), on_link=lambda up, d: links.append((up, d))).start()  # broker down
    try:
        for i in range(10):
            pub.publish("alerts", {"seq": i})
        assert not pub.wait_connected(1.5)
        assert links and links[0][0] is False and "cannot reach broker" in links[0][1]  # alerted, once
        assert len([x for x in links if not x[0]]) == 1
        assert pub.pending() == 10
        b.start()
        assert pub.wait_connected(5)
        assert wait_for(lambda: links[-1][0] is True, 2)
        assert wait_for(lambda: {m["seq"] for m in c.on("alerts")} == set(range(10)), 10)
        c.stop()
    finally:
        pub.stop(flush_timeout_s=2)
        b.stop()


def test_availability_online_then_stopped_on_clean_exit(broker: Broker) -> None:
    pub = EventPublisher(settings_for(broker)).start()
    assert pub.wait_connected(5)
    assert wait_for(lambda: retained(broker, "wastesort/t/available") == "online", 5)
    assert pub.stop()
    assert retained(broker, "wastesort/t/available") == "stopped"


def test_last_will_says_offline_when_the_process_dies(broker: Broker) -> None:
    code = (
        "import os, signal\n"
        "from daemon.mqtt_events import EventPublisher\n"
        "from daemon.settings import MqttSettings\n"
        f"s = MqttSettings(host='{broker.host}', port={broker.port}, line_id='t', keepalive_s=5)\n"
        "p = EventPublisher(s).start()\n"
        "assert p.wait_connected(5)\n"
        "import time; time.sleep(0.3)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=30)
    assert wait_for(lambda: retained(broker, "wastesort/t/available") == "offline", 5)


@pytest.mark.skipif(not Path("/usr/bin/mosquitto_passwd").exists(), reason="mosquitto_passwd not installed")
def test_username_and_password_file(tmp_path: Path) -> None:
    b = Broker(tmp_path)
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "sorter", "s3cret"], check=True)
    auth = f"allow_anonymous false\npassword_file {pwfile}"
    b.conf.write_text(b.conf.read_text().replace("allow_anonymous true", auth))
    b.start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret\n")
        good = EventPublisher(settings_for(b, username="sorter", password_file=secret)).start()
        assert good.wait_connected(5)
        good.stop()
        secret.write_text("wrong\n")
        links: list[tuple[bool, str]] = []
        bad = EventPublisher(settings_for(b, username="sorter", password_file=secret),
                             on_link=lambda up, d: links.append((up, d))).start()
        assert not bad.wait_connected(3.5)  # paho retries every second: 3 or 4 refused logins...
        bad.stop(flush_timeout_s=0.1)
        assert len(links) == 1 and links[0][0] is False, links  # ...one report for the outage
        assert "not authorised" in links[0][1] and "password_file" in links[0][1]
        assert "wrong" not in links[0][1]
    finally:
        b.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    """TLS to a broker whose certificate is signed by a CA given in ca_file (hostname verified)."""

    def ssl_cmd(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    ssl_cmd("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.crt")
    ssl_cmd("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl_cmd("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    b = Broker(tmp_path)
    b.conf.write_text(b.conf.read_text() + f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
                      f"keyfile {tmp_path}/server.key\n")
    b.start()
    try:
        pub = EventPublisher(settings_for(b, tls=True, ca_file=tmp_path / "ca.crt")).start()
        assert pub.wait_connected(5)
        pub.publish("items", {"seq": 1})
        assert pub.stop()
        plain = EventPublisher(settings_for(b)).start()  # no TLS: the broker must refuse
        assert not plain.wait_connected(1.0)
        plain.stop(flush_timeout_s=0.1)
        ssl_cmd("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                "-subj", "/CN=other-ca", "-keyout", "other.key", "-out", "other.crt")
        links: list[tuple[bool, str]] = []
        untrusted = EventPublisher(settings_for(b, tls=True, ca_file=tmp_path / "other.crt"),
                                   on_link=lambda up, d: links.append((up, d))).start()
        assert not untrusted.wait_connected(2.5)
        untrusted.stop(flush_timeout_s=0.1)
        assert len(links) == 1 and links[0][0] is False, links  # once per outage, with the cause named
        assert "certificate" in links[0][1] and "not trusted" in links[0][1] and "ca_file" in links[0][1]
    finally:
        b.stop()


def test_restored_only_after_a_loss_and_after_the_queued_alerts(broker: Broker, collector: Collector) -> None:
    """A subscriber must see broker_lost (queued during the outage) before broker_restored, and no
    broker_restored at a start without a loss."""
    pub: EventPublisher | None = None
    seq = iter(range(1, 100))

    def on_link(up: bool, detail: str) -> None:
        assert pub is not None
        pub.publish("alerts", {"kind": "broker_restored" if up else "broker_lost", "seq": next(seq)})

    def distinct() -> list[str]:
        """Kinds in order of first arrival, one per seq: QoS 1 may deliver a message again after a
        reconnect (docs/mqtt.md), and a consumer deduplicates on (run, seq) as here."""
        seen: dict[int, str] = {}
        for a in collector.on("alerts"):
            seen.setdefault(a["seq"], a["kind"])
        return list(seen.values())

    pub = EventPublisher(settings_for(broker), on_link=on_link).start()
    try:
        assert pub.wait_connected(5)
        pub.publish("alerts", {"kind": "marker", "seq": 0})
        assert wait_for(lambda: len(distinct()) == 1, 5)
        broker.stop()
        assert wait_for(lambda: not pub.connected, 5)
        for i in range(20):
            pub.publish("items", {"seq": i})
        broker.start()
        assert wait_for(lambda: len(distinct()) == 3, 15)
        time.sleep(0.3)
        assert distinct() == ["marker", "broker_lost", "broker_restored"]
    finally:
        pub.stop(flush_timeout_s=2)
