"""Publishes the daemon's events to MQTT (see docs/mqtt.md) without ever blocking the pipeline.

paho-mqtt's own queue holds QoS 1 messages while the broker is unreachable
(unbounded queue, automatic reconnect with back-off) and sends them after the
reconnect; the daemon never waits for the broker, not even at start-up.

Link reports (``on_link``) come once per outage and name the cause (refused login,
untrusted certificate, nothing listening); "up" is reported only after a reported loss,
and only once the queued backlog has gone out, so that subscribers get the queued
``broker_lost`` before ``broker_restored``.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from daemon.settings import MqttSettings

log = structlog.get_logger(__name__)

TOPICS = ("available", "items", "actuations", "stats", "alerts", "model")


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (paho does not pass it on)."""

    last_connect_error: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as e:
            self.last_connect_error = e
            raise
        self.last_connect_error = None
        return rc


_LOGIN_REFUSED = {4, 5, 134, 135}  # MQTT 3.1.1 CONNACK 4/5, MQTT 5 reason codes 0x86/0x87


def refusal_cause(reason_code: Any) -> str:
    """Why the broker refused a CONNECT, in words an operator acts on."""
    if getattr(reason_code, "value", None) in _LOGIN_REFUSED or "authori" in str(reason_code).lower():
        return (f"broker refused the login: not authorised ({reason_code}); "
                "check mqtt.username and the password in mqtt.password_file")
    return f"broker refused the connection: {reason_code}"


def connect_failure_cause(error: OSError | None, host: str, port: int) -> str:
    """Why the TCP/TLS connection could not be made (the exception paho swallowed)."""
    where = f"{host}:{port}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return (f"TLS certificate of broker {where} not trusted: {error.verify_message}; "
                "check mqtt.ca_file (and that mqtt.host is a name the certificate holds)")
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake with broker {where} failed ({error.reason}); is it a TLS port? check mqtt.tls"
    if isinstance(error, ConnectionRefusedError):
        return f"cannot reach broker {where}: connection refused (nothing listening)"
    if isinstance(error, socket.gaierror):
        return f"cannot reach broker {where}: unknown host"
    detail = f": {error}" if error is not None else ""
    return f"cannot reach broker {where}{detail}"


class EventPublisher:
    """One MQTT client per daemon; topics live under ``<prefix>/<line_id>/``."""

    def __init__(self, settings: MqttSettings, on_link: Callable[[bool, str], None] | None = None) -> None:
        self._s = settings
        self._on_link = on_link
        self.base = f"{settings.prefix}/{settings.line_id}"
        self._connected = threading.Event()
        self._closing = False
        self._down_reported = False  # one "broker down" report per outage, also when it was never up
        self._online_mid: int | None = None  # "online" after a reported loss: its PUBACK reports "up"
        self._sent: set[int] = set()  # mids of QoS>0 messages handed to paho...
        self._acked: set[int] = set()  # ...and those the broker acknowledged (on_publish)
        self._lock = threading.Lock()
        self.published = 0
        client_id = settings.client_id or f"wastesort-{settings.line_id}-{uuid.uuid4().hex[:8]}"
        c = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        c.max_queued_messages_set(0)  # 0 = unbounded: nothing is dropped while the broker is away
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
        c.will_set(self.topic("available"), "offline", qos=1, retain=True)
        if settings.username:
            c.username_pw_set(settings.username, settings.read_password())
        if settings.tls:
            c.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_connect_fail = self._handle_connect_fail
        c.on_publish = self._handle_publish
        self._client = c

    def topic(self, name: str) -> str:
        return f"{self.base}/{name}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> EventPublisher:
        """Connect in the background; an unreachable broker is retried forever."""
        self._client.connect_async(self._s.host, self._s.port, keepalive=self._s.keepalive_s)
        self._client.loop_start()
        return self

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def publish(self, name: str, payload: dict[str, Any], retain: bool = False) -> None:
        self._send(self.topic(name), json.dumps(payload, separators=(",", ":")), retain)

    def _send(self, topic: str, payload: str, retain: bool) -> None:
        info = self._client.publish(topic, payload, qos=self._s.qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.error("mqtt_publish_failed", topic=topic, rc=info.rc)  # e.g. queue full: never silent
        with self._lock:
            if self._s.qos > 0:
                self._sent.add(info.mid)
            self.published += 1

    def pending(self) -> int:
        """QoS>0 messages not yet acknowledged by the broker."""
        with self._lock:
            done = self._sent & self._acked
            self._sent -= done
            self._acked -= done
            return len(self._sent)

    def stop(self, flush_timeout_s: float = 5.0) -> bool:
        """Publish ``stopped`` (retained), wait for the queue to drain, disconnect. True if all delivered.

        ``pending()`` still tells how many messages were left undelivered afterwards.
        """
        self._send(self.topic("available"), "stopped", retain=True)
        end = time.monotonic() + flush_timeout_s
        while self.pending() and time.monotonic() < end:
            time.sleep(0.02)
        delivered = self.pending() == 0
        if not delivered:
            log.warning("mqtt_undelivered_at_exit", messages=self.pending())
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        return delivered

    # --- paho callbacks (network thread) ------------------------------------------------------
    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            cause = refusal_cause(reason_code)
            if self._down_reported or self._closing:  # paho retries: one report per outage, not per attempt
                log.debug("mqtt_connect_refused", reason=str(reason_code))
                return
            self._down_reported = True
            log.warning("mqtt_connect_refused", reason=str(reason_code), cause=cause)
            if self._on_link:
                self._on_link(False, cause + "; retrying, events are queued")
            return
        self._connected.set()
        was_down, self._down_reported = self._down_reported, False
        info = client.publish(self.topic("available"), "online", qos=1, retain=True)
        # Sent ahead of the backlog paho resends after this callback; its PUBACK comes after that backlog
        # went out, so "up" (broker_restored) then queues behind the queued broker_lost.
        self._online_mid = info.mid if was_down else None
        log.info("mqtt_connected", host=self._s.host, port=self._s.port, queued=self.pending())

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing:
            self._down_reported = True
            log.warning("mqtt_disconnected", reason=str(reason_code))
            if self._on_link:
                self._on_link(False, f"broker connection lost: {reason_code}")

    def _handle_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._down_reported or self._closing:
            return
        self._down_reported = True
        cause = connect_failure_cause(getattr(client, "last_connect_error", None), self._s.host, self._s.port)
        log.warning("mqtt_unreachable", host=self._s.host, port=self._s.port, cause=cause)
        if self._on_link:
            self._on_link(False, cause + "; retrying, events are queued")

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        if mid == self._online_mid:
            self._online_mid = None
            if self._on_link and not self._closing:
                self._on_link(True, f"connected to {self._s.host}:{self._s.port} again")
            return
        if self._s.qos > 0:  # QoS 0 is not tracked (nothing to wait for)
            with self._lock:
                self._acked.add(mid)
