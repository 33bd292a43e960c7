import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from aimass.contracts import DetectedObject, Detections
from aimass.site import SiteFileError, Window, parse_site
from aimass_rules.engine import RuleEngine
from aimass_rules.schedule import armed

BERLIN = "Europe/Berlin"


def _ms(y, mo, d, h, mi, tz=BERLIN):
    return dt.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(tz)).timestamp() * 1000


AFTER_HOURS = [Window(days=["mon", "tue", "wed", "thu", "fri"], **{"from": "18:00"}, to="07:00")]


@pytest.mark.parametrize("when, expected", [
    (_ms(2026, 11, 23, 17, 59), False),  # Monday before six
    (_ms(2026, 11, 23, 18, 0), True),    # Monday six o'clock
    (_ms(2026, 11, 24, 6, 59), True),    # Tuesday early: Monday's window, past midnight
    (_ms(2026, 11, 24, 7, 0), False),
    (_ms(2026, 11, 28, 3, 0), True),     # Saturday 03:00: Friday's window
    (_ms(2026, 11, 28, 20, 0), False),   # Saturday evening: no window starts on Saturday
])
def test_after_hours_window_in_the_site_time_zone(when, expected):
    assert armed(AFTER_HOURS, BERLIN, when) is expected


def test_no_windows_means_always_and_time_zone_matters():
    assert armed([], BERLIN, 0.0)
    day = [Window(**{"from": "09:00"}, to="17:00")]
    t = _ms(2026, 11, 23, 8, 30, tz="UTC")  # 09:30 in Berlin (UTC+1)
    assert armed(day, BERLIN, t) and not armed(day, "UTC", t)


def test_rule_outside_its_schedule_sees_nothing_and_ends_an_open_incident():
    site = parse_site("""
site: {id: s, timezone: Europe/Berlin}
cameras: [{id: c, zones: [{id: z, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]}]}]
rules:
  - {id: r, type: zone_intrusion, camera: c, zone: z, min_frames: 1, schedule: [{from: "18:00", to: "19:00"}]}
""")
    eng = RuleEngine(site, clock=lambda: 0.0)
    person = [DetectedObject("person", 0, 0.9, 0.4, 0.4, 0.6, 0.8)]

    def at(ms, seq):
        return [v.event for v in eng.on_detections(Detections(site_id="s", camera_id="c", seq=seq, captured_ms=ms,
                                                              width=1, height=1, model_name="m", model_version="1",
                                                              objects=person))]
    assert at(_ms(2026, 11, 23, 17, 58), 0) == []        # not armed yet
    assert at(_ms(2026, 11, 23, 18, 1), 1) == ["start"]
    assert at(_ms(2026, 11, 23, 19, 1), 2) == ["end"]    # the window closed with the person still there


def test_bad_schedule_and_time_zone_are_refused():
    with pytest.raises(SiteFileError, match="from"):
        parse_site("site: {id: s}\nrules: [{id: r, type: sensor_threshold, sensor: t, above: 1, schedule: [{from: '25:00', to: '07:00'}]}]\nsensors: [{id: t, kind: x}]")
    with pytest.raises(SiteFileError, match="time zone"):
        parse_site("site: {id: s, timezone: Mars/Olympus}")
