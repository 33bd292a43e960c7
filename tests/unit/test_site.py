"""The site file: a good file parses; each kind of mistake is a SiteFileError naming the file and field."""

import pytest

from aimass.site import SensorThresholdRule, SiteFileError, ZoneIntrusionRule, load_site, parse_site

GOOD = """
site:
  id: plant-7
  name: Plant 7
  timezone: Europe/Berlin
cameras:
  - id: cam-1
    fps: 5
    zones:
      - id: restricted
        name: Restricted area
        polygon: [[0.2, 0.2], [0.6, 0.2], [0.6, 0.8], [0.2, 0.8]]
    scene:
      background: yard
      actors:
        - id: walker
          asset: person_1
          label: person
          height: 0.4
          path: [{t: 0, x: 0.1, y: 0.9}, {t: 10, x: 0.4, y: 0.6}]
sensors:
  - id: temp-1
    kind: temperature
    unit: °C
    simulate: {base: 21, noise: 0.2, steps: [{at: 30, value: 70}]}
rules:
  - id: intrusion
    type: zone_intrusion
    camera: cam-1
    zone: restricted
    severity: high
  - id: overheat
    type: sensor_threshold
    sensor: temp-1
    above: 60
"""


def write(tmp_path, text, name="site.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def load_error(tmp_path, text) -> str:
    p = write(tmp_path, text)
    with pytest.raises(SiteFileError) as exc:
        load_site(p)
    msg = str(exc.value)
    assert msg.startswith(f"{p}:"), msg  # every error names the file
    return msg


def test_good_file_parses(tmp_path):
    s = load_site(write(tmp_path, GOOD))
    assert s.site.id == "plant-7"
    assert s.camera("cam-1").zone("restricted").polygon[1] == (0.6, 0.2)
    assert s.camera("cam-1").scene.actors[0].path[1].t == 10
    assert s.sensor("temp-1").simulate.steps[0].value == 70
    zone_rule, temp_rule = s.rules
    assert isinstance(zone_rule, ZoneIntrusionRule) and isinstance(temp_rule, SensorThresholdRule)
    assert (zone_rule.classes, zone_rule.min_frames, zone_rule.clear_frames, zone_rule.cooldown_s) == (["person"], 3, 5, 30.0)
    assert (temp_rule.above, temp_rule.below, temp_rule.hysteresis) == (60, None, None)


def test_unknown_rule_type(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("type: sensor_threshold", "type: sensor_magic"))
    assert "rules.1:" in msg and "'sensor_magic'" in msg and "'type'" in msg


def test_zone_not_on_camera(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("zone: restricted", "zone: loading-bay"))
    assert "rules.0.zone:" in msg and "'loading-bay' is not defined on camera 'cam-1'" in msg
    assert "zones: ['restricted']" in msg


def test_undefined_camera_and_sensor(tmp_path):
    assert "rules.0.camera:" in load_error(tmp_path, GOOD.replace("camera: cam-1", "camera: cam-9"))
    assert "rules.1.sensor:" in load_error(tmp_path, GOOD.replace("sensor: temp-1", "sensor: temp-9"))


def test_polygon_with_two_points(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("[[0.2, 0.2], [0.6, 0.2], [0.6, 0.8], [0.2, 0.8]]", "[[0.2, 0.2], [0.6, 0.2]]"))
    assert "cameras.0.zones.0.polygon:" in msg and "at least 3" in msg


def test_polygon_without_area(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("[[0.2, 0.2], [0.6, 0.2], [0.6, 0.8], [0.2, 0.8]]",
                                            "[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]"))
    assert "cameras.0.zones.0.polygon:" in msg and "one line" in msg


def test_polygon_outside_the_frame(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("[0.6, 0.8]", "[1.6, 0.8]"))
    assert "cameras.0.zones.0.polygon.2.0:" in msg


def test_bad_yaml(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("  - id: temp-1", "  - id: [temp-1"))
    assert "not valid YAML" in msg and "line" in msg


def test_not_a_mapping_and_missing_file(tmp_path):
    assert "expected a mapping" in load_error(tmp_path, "- just\n- a list\n")
    with pytest.raises(SiteFileError, match="nope.yaml: cannot read"):
        load_site(tmp_path / "nope.yaml")


def test_wrong_field_name_and_duplicate_ids(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("min_frames", "min_frame").replace("severity: high", "severty: high"))
    assert "rules.0.zone_intrusion.severty:" in msg
    dup = GOOD.replace("id: overheat", "id: intrusion")
    assert "rules: duplicate rule id(s): intrusion" in load_error(tmp_path, dup)


def test_several_problems_are_all_listed(tmp_path):
    msg = load_error(tmp_path, GOOD.replace("fps: 5", "fps: 0").replace("above: 60", "above: sixty"))
    assert "2 problem(s)" in msg and "cameras.0.fps:" in msg and "rules.1.sensor_threshold.above:" in msg


def test_parse_site_names_its_source():
    with pytest.raises(SiteFileError, match=r"^inline\.yaml: not valid YAML"):
        parse_site("a: [", "inline.yaml")


def test_errors_name_the_line_of_the_bad_field():
    text = """site: {id: s}
cameras:
  - id: c
    zones:
      - {id: z, polygon: [[0, 0], [1, 0], [1, 1]]}
rules:
  - id: r1
    type: zone_intrusion
    camera: c
    zone: nope
"""
    with pytest.raises(SiteFileError) as e:
        parse_site(text, "site.yaml")
    assert "site.yaml:10: rules.0.zone:" in str(e.value)
    with pytest.raises(SiteFileError) as e:
        parse_site(text.replace("zone: nope", "zone: z\n    min_score: 7"), "site.yaml")
    assert "site.yaml:11: rules.0.zone_intrusion.min_score:" in str(e.value)


AT_REST = """site: {id: s}
cameras:
  - id: c
    zones:
      - {id: z, polygon: [[0, 0], [1, 0], [1, 1]]}
rules:
  - id: no-parking
    type: stopped
    camera: c
    zone: z
    seconds: 60
  - id: left-bag
    type: left_behind
    camera: c
    zone: z
    seconds: 30
"""


def test_stopped_and_left_behind_rules_parse_with_their_defaults():
    from aimass.site import LeftBehindRule, StoppedRule
    stopped, left = parse_site(AT_REST, "site.yaml").rules
    assert isinstance(stopped, StoppedRule) and isinstance(left, LeftBehindRule)
    assert (stopped.classes, stopped.max_move, stopped.clear_s) == (["vehicle"], 0.03, 2.0)
    assert (left.classes, left.owner_classes, left.owner_distance) == (["bag"], ["person"], 0.15)


@pytest.mark.parametrize("old,new,where", [
    ("    seconds: 60", "    seconds: 60\n    max_move: -0.1", "site.yaml:12: rules.0.stopped.max_move:"),
    ("    seconds: 60", "    seconds: 0", "site.yaml:11: rules.0.stopped.seconds:"),
    ("    seconds: 30", "    seconds: 30\n    owner_distance: 0", "site.yaml:17: rules.1.left_behind.owner_distance:"),
    ("    seconds: 30", "    seconds: 30\n    owner_classes: [bag]", "site.yaml:17: rules.1.left_behind.owner_classes:"),
    ("    seconds: 30", "    seconds: 30\n    owner: person", "site.yaml:17: rules.1.left_behind.owner:"),
])
def test_stopped_and_left_behind_bad_fields_name_file_line_and_field(old, new, where):
    with pytest.raises(SiteFileError) as e:
        parse_site(AT_REST.replace(old, new), "site.yaml")
    assert where in str(e.value), str(e.value)
