import random

from aimass.site import Sensor
from aimass_gateway.simulate import sensor_value


def test_sensor_follows_its_steps():
    s = Sensor(id="t", kind="temperature", simulate={"base": 21, "steps": [{"at": 4, "value": 45}, {"at": 9, "value": 21}]})
    rng = random.Random(0)
    assert [sensor_value(s, t, rng) for t in (0, 3.9, 4, 8.9, 9, 30)] == [21, 21, 45, 45, 21, 21]


def test_noise_is_seeded():
    s = Sensor(id="t", kind="temperature", simulate={"base": 10, "noise": 0.5})
    a = [sensor_value(s, 1, random.Random("x")) for _ in range(3)]
    b = [sensor_value(s, 1, random.Random("x")) for _ in range(3)]
    assert a == b and all(abs(v - 10) < 3 for v in a) and a[0] != 10
