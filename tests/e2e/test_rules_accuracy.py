"""The rules' measured accuracy: every scenario of services/rules/scenarios.yaml through the real
detector, tracker and rule engine (offline, simulated time). Floors: precision and recall ≥ 0.95 for
every rule type, and every rule type the site file offers is covered."""

import pytest

from aimass.settings import DetectorSettings
from aimass_rules.engine import EVALUATORS
from aimass_rules.evaluation import evaluate, load_scenarios

pytestmark = pytest.mark.e2e


def test_suite_covers_every_rule_and_is_large_enough():
    scenarios = load_scenarios()
    assert len(scenarios) >= 20
    covered = {r.type for sc in scenarios for r in sc.site.rules if sc.expect.get(r.id)}
    assert covered == set(EVALUATORS)


def test_precision_and_recall_per_rule_type_meet_the_floor():
    outcomes, scores = evaluate(DetectorSettings().model_dir)
    misses = [o for o in outcomes if o.fp or o.fn]
    assert set(scores) == set(EVALUATORS)
    for rule_type, s in scores.items():
        assert s["precision"] >= 0.95 and s["recall"] >= 0.95, (rule_type, s, misses)
