"""NoiseWatch: every malformed line counts, few are logged, one alert per noisy spell."""

from __future__ import annotations

from daemon.noise import NoiseWatch


def test_logs_once_per_interval_and_alerts_once_per_spell() -> None:
    w = NoiseWatch(alert_count=5, window_s=10.0, log_interval_s=10.0)
    verdicts = [w.record(100.0 + i * 0.1) for i in range(50)]  # a burst of 50 in 5 s
    assert [v.log for v in verdicts].count(True) == 1 and verdicts[0].log
    assert [v.alert for v in verdicts].count(True) == 1 and verdicts[4].alert
    late = w.record(111.0)  # still within 10 s of the last one: same spell, but time to log again
    assert late.log and late.suppressed == 49 and not late.alert
    for i in range(5):  # a new burst after a quiet window: a new spell, a new alert
        v = w.record(130.0 + i * 0.1)
    assert v.alert


def test_a_slow_trickle_never_alerts() -> None:
    w = NoiseWatch(alert_count=5, window_s=10.0)
    assert not any(w.record(t * 3.0).alert for t in range(100))  # one every 3 s: at most 4 per window
