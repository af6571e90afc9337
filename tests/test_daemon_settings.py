"""Settings: the example file, environment overrides and readable validation errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.settings import ConfigError, SerialSettings, load_settings

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "daemon" / "defaults" / "example.toml"


def test_example_config_is_valid_and_complete() -> None:
    s = load_settings(EXAMPLE)
    assert s.belt.speed_mm_s == 300.0 and s.belt.region == (0, 120, 640, 240)
    assert s.reject_gate == 4 and s.gates[4].pulse_ms == 120
    assert s.class_to_gate["glass"] == 2
    assert s.serial.port.startswith("/dev/serial/by-id/")
    assert (s.mqtt.prefix, s.mqtt.line_id, s.mqtt.qos) == ("wastesort", "line1", 1)


def test_environment_overrides_nested_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASTESORT_MQTT__HOST", "broker.example")
    monkeypatch.setenv("WASTESORT_GATES__2__DISTANCE_MM", "1050")
    monkeypatch.setenv("WASTESORT_CLASSIFY__CONFIDENCE_THRESHOLD", "0.75")
    s = load_settings(EXAMPLE)
    assert s.mqtt.host == "broker.example"
    assert s.gates[2].distance_mm == 1050 and s.gates[2].lead_time_ms == 15  # merged, not replaced
    assert s.gates[1].distance_mm == 900
    assert s.classify.confidence_threshold == 0.75


def test_invalid_environment_value_names_key_and_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASTESORT_BELT__SPEED_MM_S", "-5")
    with pytest.raises(ConfigError) as e:
        load_settings(EXAMPLE)
    assert "belt.speed_mm_s" in str(e.value) and "'-5'" in str(e.value)



@pytest.mark.parametrize(
    "toml, expected",
    [
        ("[belt]\nspeed_mm_s = 'fast'\n", "belt.speed_mm_s"),
        ("[mqtt]\nport = 70000\n", "mqtt.port"),
        ("[mqtt]\nline_id = 'a/b'\n", "mqtt.line_id"),
        ("[camera]\nsourse = '0'\n", "camera.sourse"),
        ("[classify]\nbackend = 'tensorflow'\n", "classify.backend"),
        ("[belt]\nregion = [0, 0, 5, 5]\n", "belt.region"),
        ("reject_gate = 9\n", "reject_gate 9 is not defined"),
        ("[class_to_gate]\nglass = 7\n", "class_to_gate.glass = 7"),
        ("reject_gate = 1\n[class_to_gate]\nglass = 1\n[gates.1]\ndistance_mm = 100\n",
         "gates.1.distance_mm = 100.0 must be beyond the belt region"),
        ("reject_gate = 1\n[class_to_gate]\nglass = 1\n[belt]\nregion = [0, 0, 240, 640]\nrotate = 90\n"
         "[gates.1]\ndistance_mm = 500\n", "(640 mm = region length along the belt"),
        ("[track]\nentry_clearance_px = 400\n", "track.entry_clearance_px = 400 leaves items no room"),
    ],
)
def test_bad_values_give_a_clear_error(tmp_path: Path, toml: str, expected: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(toml)
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load_settings(p)
    assert expected in str(e.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    p = tmp_path / "broken.toml"
    p.write_text("[belt\nspeed = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(p)


def test_password_comes_from_a_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    p = tmp_path / "c.toml"
    p.write_text(f"[mqtt]\nusername = 'sorter'\npassword_file = '{pw}'\n")
    assert load_settings(p).mqtt.read_password() == "s3cret"
    p.write_text(f"[mqtt]\npassword_file = '{pw}'\n")
    with pytest.raises(ConfigError, match="username"):
        load_settings(p)


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(EXAMPLE)],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[belt]\nspeed_mm_s = 0\n[serial]\nbaud = 'x'\n")
    r = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(bad)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "belt.speed_mm_s" in r.stderr and "(got 0)" in r.stderr and "serial.baud" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_with_bad_config_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[classify]\nconfidence_threshold = 2\n")
    r = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(bad)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "classify.confidence_threshold" in r.stderr and "Traceback" not in r.stderr


def test_missing_secret_files_are_caught_by_check_config(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(
        f"[mqtt]\nusername = 'u'\npassword_file = '{tmp_path}/nope'\ntls = true\nca_file = '/nonexistent/ca.crt'\n"
    )
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "mqtt.password_file: file not found" in str(e.value)
    assert "mqtt.ca_file" in str(e.value)


BASE = "reject_gate = 4\n[class_to_gate]\nglass = 2\ntrash = 4\n"
SOLENOID_2 = "[gates.2]\ndistance_mm = 1100\n"
SERVO_4 = "[gates.4]\ndistance_mm = 1500\nkind = 'servo'\n"


@pytest.mark.parametrize(
    "toml, expected",
    [
        (SOLENOID_2 + SERVO_4 + "bin_angles = {reject = 90}\n", "a servo gate needs rest_angle"),
        (SOLENOID_2 + SERVO_4 + "rest_angle = 0\n", "a servo gate needs rest_angle and at least one bin"),
        (SOLENOID_2 + SERVO_4 + "rest_angle = 200\nbin_angles = {reject = 90}\n", "gates.4.rest_angle"),
        (SOLENOID_2 + SERVO_4 + "rest_angle = 0\nbin_angles = {reject = 181}\n", "bin_angles.reject = 181 must be 0..180"),
        (SOLENOID_2 + SERVO_4 + "rest_angle = 0\nbin_angles = {trash = 60, glass = 120}\n",
         "gates.4 is a servo gate without bin_angles for reject"),
        (SOLENOID_2 + "rest_angle = 10\n" + SERVO_4 + "rest_angle = 0\nbin_angles = {reject = 9}\n",
         'for kind = "servo" gates only'),
        (SOLENOID_2 + "kind = 'flap'\n[gates.4]\ndistance_mm = 1500\n", "gates.2.kind"),
    ],
)
def test_bad_servo_gates_give_a_clear_error(tmp_path: Path, toml: str, expected: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(BASE + toml)
    with pytest.raises(ConfigError, match="invalid configuration") as e:
        load_settings(p)
    assert expected in str(e.value)


def test_servo_gate_angles_per_bin(tmp_path: Path) -> None:
    s = load_settings(EXAMPLE, gates={"1": {"distance_mm": 900}, "2": {"distance_mm": 1100},
                                      "3": {"distance_mm": 1300, "kind": "servo", "rest_angle": 5,
                                            "bin_angles": {"metal": 45, "plastic": 135}},
                                      "4": {"distance_mm": 1500, "kind": "servo", "rest_angle": 0,
                                            "bin_angles": {"reject": 100}}})
    assert s.gates[3].angle_for("metal") == 45 and s.gates[3].angle_for("plastic") == 135
    assert s.gates[3].angle_for("glass") is None  # two bins: no guessing
    assert s.gates[4].angle_for("trash") == 100 and s.gates[4].angle_for("reject") == 100  # one bin takes all
    assert s.gates[1].angle_for("paper") is None  # a solenoid
    assert s.servo_rest_angles() == {3: 5, 4: 0}


def test_camera_controls_validate(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[camera]\nsource = '/dev/video0'\nwidth = 1280\nheight = 720\nfps = 30\nauto_exposure = false\n"
                 "exposure = 156\nauto_white_balance = false\nwhite_balance_temperature = 4600\n")
    c = load_settings(p).camera
    assert (c.width, c.height, c.fps, c.auto_exposure, c.exposure) == (1280, 720, 30.0, False, 156.0)
    assert (c.auto_white_balance, c.white_balance_temperature) == (False, 4600.0)
    assert load_settings(EXAMPLE).camera.exposure is None  # unset: the driver decides
    for toml, expected in [
        ("exposure = 100\nauto_exposure = true\n", "camera.auto_exposure = true would override it"),
        ("white_balance_temperature = 5000\nauto_white_balance = true\n", "auto_white_balance = true would"),
        ("width = 640\n", "set camera.width and camera.height together"),
        ("fps = 0\n", "camera.fps"),
        ("white_balance_temperature = -1\n", "camera.white_balance_temperature"),
        ("auto_exposure = 'maybe'\n", "camera.auto_exposure"),
    ]:
        p.write_text("[camera]\n" + toml)
        with pytest.raises(ConfigError) as e:
            load_settings(p)
        assert expected in str(e.value), (toml, str(e.value))


def test_default_serial_timing_lets_a_retry_happen_before_the_deadline() -> None:
    s = load_settings(EXAMPLE).serial
    assert s.retries >= 1 and s.retries * s.ack_timeout_ms <= s.max_late_ms
    d = SerialSettings()
    assert d.retries >= 1 and d.retries * d.ack_timeout_ms <= d.max_late_ms


def test_retries_that_can_never_be_sent_are_refused_by_check_config(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[serial]\nack_timeout_ms = 50\nretries = 2\nmax_late_ms = 20\n")  # the old defaults
    r = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(p)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout
    assert "serial.retries = 2 can never all be sent" in r.stderr and "at most 0 fit" in r.stderr
    assert "Traceback" not in r.stderr
    p.write_text("[serial]\nack_timeout_ms = 10\nretries = 2\nmax_late_ms = 20\n")
    assert load_settings(p).serial.retries == 2


@pytest.mark.parametrize("key", ["password", "pass", "mqtt_pw", "login"])
def test_an_inline_secret_never_appears_in_the_error(tmp_path: Path, key: str) -> None:
    secret = "Tr0ub4dor&3-zebra"
    p = tmp_path / "c.toml"
    p.write_text(f"[mqtt]\nusername = 'sorter'\n{key} = '{secret}'\n")
    r = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(p)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"mqtt.{key}" in r.stderr  # the key is named...
    assert secret not in r.stderr + r.stdout  # ...its value never shown
    env = {**os.environ, "WASTESORT_MQTT__PASSWORD": secret}
    p.write_text("[mqtt]\nusername = 'sorter'\n")
    r = subprocess.run([sys.executable, "-m", "daemon", "check-config", str(p)],
                       cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "mqtt.password" in r.stderr and secret not in r.stderr + r.stdout
    assert "password_file" in r.stderr  # where it belongs


def test_a_password_typed_as_password_file_is_not_echoed(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[mqtt]\nusername = 'sorter'\npassword_file = 'hunter2-secret'\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "mqtt.password_file: file not found" in str(e.value) and "hunter2-secret" not in str(e.value)


@pytest.mark.parametrize("name", ["belt.avi", "frames"])
def test_a_missing_video_file_or_image_folder_exits_2_naming_the_path(tmp_path: Path, name: str) -> None:
    # Issue 14, defect 3: `run` retried a missing file forever and `check-config` called it OK.
    missing = tmp_path / "nowhere" / name
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[camera]\nsource = "{missing}"\n[mqtt]\nenabled = false\n[serial]\nenabled = false\n')
    for command in (["check-config", str(cfg)], ["run", "--config", str(cfg)]):
        r = subprocess.run([sys.executable, "-m", "daemon", *command], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (command, r.stderr)
        assert f"camera.source: no such video file or image folder: {missing}" in r.stderr
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("source", ["0", "/dev/video42", "rtsp://192.0.2.1/belt"])
def test_devices_and_streams_are_not_checked_for_existence(source: str) -> None:
    assert load_settings(None, camera={"source": source}).camera.source == source  # retried at run time instead
