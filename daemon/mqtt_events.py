"""Publishes the daemon's events to MQTT (see docs/mqtt.md) without ever blocking the pipeline.

paho-mqtt's own queue holds QoS 1 messages while the broker is unreachable
(unbounded queue, automatic reconnect with back-off) and sends them after the
reconnect; the daemon never waits for the broker, not even at start-up.
"""

from __future__ import annotations

import json
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


class EventPublisher:
    """One MQTT client per daemon; topics live under ``<prefix>/<line_id>/``."""

    def __init__(self, settings: MqttSettings, on_link: Callable[[bool, str], None] | None = None) -> None:
        self._s = settings
        self._on_link = on_link
        self.base = f"{settings.prefix}/{settings.line_id}"
        self._connected = threading.Event()
        self._closing = False
        self._down_reported = False  # one "broker down" report per outage, also when it was never up
        self._sent: set[int] = set()  # mids of QoS>0 messages handed to paho...
        self._acked: set[int] = set()  # ...and those the broker acknowledged (on_publish)
        self._lock = threading.Lock()
        self.published = 0
        client_id = settings.client_id or f"wastesort-{settings.line_id}-{uuid.uuid4().hex[:8]}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
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
            log.warning("mqtt_connect_refused", reason=str(reason_code))
            if self._on_link:
                self._on_link(False, f"broker refused connection: {reason_code}")
            return
        self._connected.set()
        self._down_reported = False
        client.publish(self.topic("available"), "online", qos=1, retain=True)
        log.info("mqtt_connected", host=self._s.host, port=self._s.port, queued=self.pending())
        if self._on_link:
            self._on_link(True, f"connected to {self._s.host}:{self._s.port}")

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
        msg = f"cannot reach broker {self._s.host}:{self._s.port}; retrying, events are queued"
        log.warning("mqtt_unreachable", host=self._s.host, port=self._s.port)
        if self._on_link:
            self._on_link(False, msg)

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, props: Any) -> None:
        if self._s.qos > 0:  # QoS 0 is not tracked (nothing to wait for)
            with self._lock:
                self._acked.add(mid)
