"""Daemon configuration: a TOML file plus ``WASTESORT_...`` environment overrides.

Environment variables win over the file; nested keys use ``__``
(``WASTESORT_MQTT__HOST=broker``, ``WASTESORT_GATES__2__DISTANCE_MM=850``).
All physical quantities are in millimetres, milliseconds or seconds as named.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon.serial_protocol import SERVO_MAX_DEG


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def source_kind(source: str) -> Literal["camera", "stream", "file", "folder"]:
    """'camera' (index or device), 'stream' (URL), 'file' (video) or 'folder' (images)."""
    if source.isdigit() or source.startswith("/dev/"):
        return "camera"
    if "://" in source:
        return "stream"
    return "folder" if Path(source).is_dir() else "file"


class CameraSettings(_Section):
    """Where frames come from: camera index ("0"), device path, RTSP/HTTP URL, video file or image folder."""

    source: str = "0"
    realtime: bool = True  # files/folders: pace at fps (True) or run as fast as possible (False)
    folder_fps: float = Field(30.0, gt=0)  # pacing for image folders
    reconnect_delay_s: float = Field(1.0, gt=0)
    reconnect_max_delay_s: float = Field(10.0, gt=0)
    max_failures: int = Field(0, ge=0)  # consecutive failed opens before giving up; 0 = retry forever
    # Live cameras only, re-applied at every (re)open (V4L2 forgets them on power loss); unset = the
    # driver's choice. exposure and white_balance_temperature are in the driver's units.
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)
    auto_exposure: bool | None = None
    exposure: float | None = None
    auto_white_balance: bool | None = None
    white_balance_temperature: float | None = Field(None, ge=0)

    @field_validator("source")
    @classmethod
    def _file_or_folder_exists(cls, v: str) -> str:
        # A camera may be plugged in and a stream may come up later (both are retried); a video file or
        # image folder that is not there is a typing error in the configuration.
        if source_kind(v) in ("file", "folder") and not Path(v).exists():
            raise ValueError(f"no such video file or image folder: {v}")
        return v

    @model_validator(mode="after")
    def _manual_values_need_manual_mode(self) -> CameraSettings:
        if self.exposure is not None and self.auto_exposure:
            raise ValueError("camera.exposure is set but camera.auto_exposure = true would override it")
        if self.white_balance_temperature is not None and self.auto_white_balance:
            raise ValueError("camera.white_balance_temperature is set but camera.auto_white_balance = true "
                             "would override it")
        if (self.width is None) != (self.height is None):
            raise ValueError("set camera.width and camera.height together")
        return self


class BeltSettings(_Section):
    """Geometry and motion of the belt, from calibration."""

    region: tuple[int, int, int, int] = (0, 0, 640, 240)  # x, y, width, height in pixels
    rotate: Literal[0, 90, 180, 270] = 0  # degrees clockwise applied to the crop so items move left to right
    speed_mm_s: float = Field(300.0, gt=0)
    px_per_mm: float = Field(1.0, gt=0)

    @property
    def length_px(self) -> int:
        """Extent of the region along the belt (after rotation), in pixels."""
        return self.region[2] if self.rotate in (0, 180) else self.region[3]

    @field_validator("region")
    @classmethod
    def _region_positive(cls, v: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x, y, w, h = v
        if x < 0 or y < 0 or w < 16 or h < 16:
            raise ValueError("region must be [x, y, width, height] with x, y >= 0 and width, height >= 16")
        return v


class DetectSettings(_Section):
    """Foreground segmentation against a model of the empty belt."""

    diff_threshold: int = Field(30, ge=1, le=255)
    min_area_px: int = Field(400, ge=1)
    blur_px: int = Field(5, ge=1)
    morph_px: int = Field(5, ge=1)
    background_alpha: float = Field(0.02, ge=0, le=1)  # learning rate of the empty-belt model
    background_alpha_item: float = Field(0.001, ge=0, le=1)  # slower rate under items: ghosts fade out
    background_image: Path | None = None  # optional photo of the empty belt; else the first frame
    edge_margin_px: int = Field(2, ge=0)  # a box this close to the region edge is "not fully inside"
    # Blobs closer than this are one item: a belt-coloured part splits an item, and no gate could
    # separate two items this close anyway (an 80 ms pulse at 300 mm/s spans 24 mm). 0 = off.
    merge_gap_px: int = Field(24, ge=0)


class TrackSettings(_Section):
    max_match_distance_px: float = Field(40.0, gt=0)
    max_missed_frames: int = Field(5, ge=0)
    # A view is the whole item only once its box stopped growing: grew by at most this much (width and
    # height) since the track's previous frame. An item coloured like the belt shows up piece by piece
    # while it enters, away from the entry edge; without this its first piece was decided as the item.
    settle_px: int = Field(4, ge=0)
    # ... and only once its box is this far from the entry edge: a dark part that the detector misses may
    # still be entering while a bright part is already clear of the edge.
    entry_clearance_px: int = Field(32, ge=0)


class ClassifySettings(_Section):
    model_path: Path | None = None  # None: the shipped default model
    backend: Literal["torch", "onnx", "onnx-int8"] = "onnx-int8"  # fastest on a CPU; see docs/results.md
    confidence_threshold: float = Field(0.5, ge=0, le=1)
    unknown_threshold: float = Field(0.5, ge=0, le=1)
    num_threads: int = Field(0, ge=0)  # inference threads (torch or ONNX Runtime); 0 = half the CPU cores (at least 1)
    # Belt around the item's box. The detected box already carries a 1-2 px halo. 4 px more moved the shipped
    # model's output on the crop away from its output on the photo (mean KL 0.123 -> 0.132, 800 training
    # photos on the simulated belt, scripts/belt_crops.py --padding 4) and cost another student 4 points on
    # the validation belt: none by default.
    crop_padding_px: int = Field(0, ge=0)
    # Decide from several crops of the item, all taken while it lies fully inside the region, combined
    # by the mean of their log-probabilities. 1 = the first full view only.
    views: int = Field(1, ge=1, le=8)
    view_spacing_mm: float = Field(0.0, ge=0)  # belt travel between two views (0: consecutive frames)
    max_view_wait_ms: float = Field(250.0, ge=0)  # from the first full view to the decision, at most


REJECT_BIN = "reject"  # a servo gate's bin for rejected items (low confidence, unknown, unmapped)


class GateSettings(_Section):
    """One gate. A servo gate diverts into several bins: ``bin_angles`` maps a bin (a class name, or
    "reject") to the angle the daemon sends with each actuation; ``rest_angle`` is where items pass by."""

    distance_mm: float = Field(gt=0)  # from the upstream (left) edge of the belt region to the gate
    lead_time_ms: float = Field(0.0, ge=0)  # actuator latency: fire this much earlier
    pulse_ms: int = Field(80, ge=1, le=10_000)
    kind: Literal["solenoid", "servo"] = "solenoid"
    rest_angle: int | None = Field(None, ge=0, le=SERVO_MAX_DEG)
    bin_angles: dict[str, int] = Field(default_factory=dict)

    @field_validator("bin_angles")
    @classmethod
    def _angles_in_range(cls, v: dict[str, int]) -> dict[str, int]:
        for name, angle in v.items():
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise ValueError(f"bin name {name!r} must be a word of letters, digits, '_' or '-'")
            if not 0 <= angle <= SERVO_MAX_DEG:
                raise ValueError(f"bin_angles.{name} = {angle} must be 0..{SERVO_MAX_DEG} degrees")
        return v

    @model_validator(mode="after")
    def _servo_fields_match_kind(self) -> GateSettings:
        if self.kind == "servo" and (self.rest_angle is None or not self.bin_angles):
            raise ValueError("a servo gate needs rest_angle and at least one bin in bin_angles")
        if self.kind == "solenoid" and (self.rest_angle is not None or self.bin_angles):
            raise ValueError('rest_angle and bin_angles are for kind = "servo" gates only')
        return self

    def angle_for(self, bin_name: str) -> int | None:
        """The servo angle for ``bin_name``; a servo gate with a single bin uses it for everything."""
        if self.kind != "servo":
            return None
        if bin_name in self.bin_angles:
            return self.bin_angles[bin_name]
        return next(iter(self.bin_angles.values())) if len(self.bin_angles) == 1 else None


class SerialSettings(_Section):
    enabled: bool = True
    port: str = "/dev/ttyUSB0"  # prefer the stable /dev/serial/by-id/... name
    baud: int = Field(115200, gt=0)
    ack_timeout_ms: float = Field(15.0, gt=0)  # resend when no ACK came this long after a send
    retries: int = Field(1, ge=0)  # at most max_late_ms / ack_timeout_ms (checked)
    max_late_ms: float = Field(20.0, ge=0)  # never (re)send a FIRE later than due + this
    heartbeat_s: float = Field(1.0, gt=0)
    reconnect_delay_s: float = Field(0.5, gt=0)
    reconnect_max_delay_s: float = Field(5.0, gt=0)
    protocol_version: int = Field(1, ge=1)
    handshake_timeout_s: float = Field(3.0, gt=0)  # covers Arduino boards' reset-on-open boot time

    @model_validator(mode="after")
    def _retries_fit_the_deadline(self) -> SerialSettings:
        """Retry k goes out k * ack_timeout_ms after the firing time and never after max_late_ms: refuse
        retries that can never be sent instead of letting them look like protection."""
        fit = math.floor(self.max_late_ms / self.ack_timeout_ms + 1e-9)
        if self.retries > fit:
            raise ValueError(
                f"serial.retries = {self.retries} can never all be sent: a retry goes out ack_timeout_ms "
                f"({self.ack_timeout_ms:g}) after the previous try and never later than max_late_ms "
                f"({self.max_late_ms:g}) after the firing time, so at most {fit} fit; lower retries or "
                "ack_timeout_ms, or raise max_late_ms"
            )
        return self


class MqttSettings(_Section):
    enabled: bool = True
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "wastesort"
    line_id: str = "line1"
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(30, ge=5)
    qos: Literal[0, 1, 2] = 1
    stats_interval_s: float = Field(10.0, gt=0)
    reconnect_min_delay_s: int = Field(1, ge=1)
    reconnect_max_delay_s: int = Field(30, ge=1)

    @field_validator("prefix", "line_id")
    @classmethod
    def _topic_safe(cls, v: str) -> str:
        if not v or any(c in v for c in "+#/") or v != v.strip():
            raise ValueError("must be non-empty without '/', '+', '#' or surrounding spaces")
        return v

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"file not found: {v}")
        return v

    @field_validator("password_file")
    @classmethod
    def _password_file_exists(cls, v: Path | None) -> Path | None:
        # The path is not repeated: a password typed here by mistake must not reach a log.
        if v is not None and not v.is_file():
            raise ValueError("file not found (the path is not shown: it may be the password itself)")
        return v

    def read_password(self) -> str | None:
        """The broker password, read from ``password_file`` (never stored in the config itself)."""
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").strip()


class CollectSettings(_Section):
    """Keeps the crops the line classified, for review and fine-tuning on site (docs/site-data.md)."""

    enabled: bool = False
    directory: Path = Path("/var/lib/wastesort/collect")
    # every item, items below low_confidence_below, items scored unknown, or one item in one_in_n
    policy: Literal["every", "low_confidence", "unknown", "one_in_n"] = "low_confidence"
    low_confidence_below: float = Field(0.7, ge=0, le=1)
    one_in_n: int = Field(10, ge=1)
    max_disk_mb: float = Field(1024.0, gt=0)  # oldest items are deleted beyond this
    queue_size: int = Field(64, ge=1)  # items waiting to be written; beyond it they are dropped (stats)
    jpeg_quality: int = Field(92, ge=10, le=100)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def _default_class_to_gate() -> dict[str, int]:
    return {"cardboard": 1, "paper": 1, "glass": 2, "metal": 3, "plastic": 3, "trash": 4}


def _default_gates() -> dict[int, GateSettings]:
    return {
        1: GateSettings(distance_mm=900, lead_time_ms=15),
        2: GateSettings(distance_mm=1100, lead_time_ms=15),
        3: GateSettings(distance_mm=1300, lead_time_ms=15),
        4: GateSettings(distance_mm=1500, lead_time_ms=15),
    }


class Settings(BaseSettings):
    """Everything the daemon needs; see daemon/defaults/example.toml for a commented example."""

    model_config = SettingsConfigDict(
        env_prefix="WASTESORT_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    camera: CameraSettings = CameraSettings()
    belt: BeltSettings = BeltSettings()
    detect: DetectSettings = DetectSettings()
    track: TrackSettings = TrackSettings()
    classify: ClassifySettings = ClassifySettings()
    gates: dict[int, GateSettings] = Field(default_factory=_default_gates)
    class_to_gate: dict[str, int] = Field(default_factory=_default_class_to_gate)
    reject_gate: int = 4
    serial: SerialSettings = SerialSettings()
    mqtt: MqttSettings = MqttSettings()
    collect: CollectSettings = CollectSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment must override it.
        return (env_settings, init_settings)

    def servo_rest_angles(self) -> dict[int, int]:
        """Servo gate -> rest angle: the actuator sets them at every connect."""
        return {n: g.rest_angle for n, g in self.gates.items() if g.kind == "servo" and g.rest_angle is not None}

    @model_validator(mode="after")
    def _gates_exist(self) -> Settings:
        known = set(self.gates)
        if self.reject_gate not in known:
            raise ValueError(f"reject_gate {self.reject_gate} is not defined in [gates] (defined: {sorted(known)})")
        for cls_name, gate in self.class_to_gate.items():
            if gate not in known:
                raise ValueError(
                    f"class_to_gate.{cls_name} = {gate} is not defined in [gates] (defined: {sorted(known)})"
                )
        for gate, g in self.gates.items():
            if g.kind != "servo":
                continue
            routed = [c for c, n in self.class_to_gate.items() if n == gate]
            routed += [REJECT_BIN] if gate == self.reject_gate else []
            missing = [b for b in routed if g.angle_for(b) is None]
            if missing:
                raise ValueError(
                    f"gates.{gate} is a servo gate without bin_angles for {', '.join(missing)} "
                    f"(bins: {', '.join(sorted(g.bin_angles))}; run: wastesort calibrate gates --jog {gate} ...)"
                )
        if self.track.entry_clearance_px >= self.belt.length_px // 2:
            raise ValueError(
                f"track.entry_clearance_px = {self.track.entry_clearance_px} leaves items no room to be decided whole: "
                f"it must be under half the belt region's length along the belt ({self.belt.length_px} px)"
            )
        region_mm = self.belt.length_px / self.belt.px_per_mm
        for gate, g in self.gates.items():
            if g.distance_mm <= region_mm:
                raise ValueError(
                    f"gates.{gate}.distance_mm = {g.distance_mm} must be beyond the belt region "
                    f"({region_mm:.0f} mm = region length along the belt / px_per_mm)"
                )
        if self.mqtt.password_file is not None and self.mqtt.username is None:
            raise ValueError("mqtt.password_file is set but mqtt.username is not")
        return self


class ConfigError(Exception):
    """A configuration problem, already formatted for a human (no traceback needed)."""


_SECRET_WORDS = ("pass", "secret", "token", "credential", "pw", "auth")


def _may_hold_a_secret(key: str, error_type: str) -> bool:
    """True when the value must not be echoed: an unknown key (where an inline password would land,
    whatever it is called) or a key whose name suggests a secret (password_file included)."""
    return error_type == "extra_forbidden" or any(w in key.lower() for w in _SECRET_WORDS)


def _format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, naming the key; values are shown to help, except where they may be secret."""
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors(include_input=True, include_url=False):
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if not key:  # a cross-field check: its message names the keys itself
            lines.append("  " + msg)
            continue
        value = e.get("input")
        if _may_hold_a_secret(key, e["type"]):
            hint = " (value not shown"
            if e["type"] == "extra_forbidden" and any(w in key.lower() for w in ("pass", "pw")):
                hint += "; the broker password belongs in the file named by mqtt.password_file"
            shown = hint + ")"
        else:
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (TOML) then apply environment overrides; raise ConfigError with a readable message."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None:
        # Dump the defaults so that environment overrides merge into them key by key.
        data = Settings.model_construct().model_dump(mode="json")
    else:
        p = Path(path)
        source = str(p)
        try:
            with p.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {p}: {e}") from None
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source + " (+ WASTESORT_* environment)")) from None
