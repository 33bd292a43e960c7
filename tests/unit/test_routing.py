"""Model routing: promote, canary, shadow, rollback and the per-frame choice (aimass.routing)."""

import pytest

from aimass import contracts, routing as R

A, B, C = "det:1", "det:2", "ssd:1"


def test_initial_routes_every_camera_to_the_active_model():
    r = R.initial(A)
    assert r.revision == 1 and R.route(r, "cam-1", 0) == (A, "") and R.models_in_use(r) == {A}
    with pytest.raises(R.RoutingError, match="NAME:VERSION"):
        R.initial("no-version")


def test_promote_then_rollback_returns_to_the_previous_active():
    r1 = R.initial(A)
    r2 = R.promote(r1, B, by="cli")
    assert r2.revision == 2 and R.route(r2, "cam", 5)[0] == B and r2.history == [{"default": A}]
    assert r1.groups["default"].active == A  # the old revision is left as it was
    r3 = R.rollback(r2)
    assert r3.revision == 3 and R.route(r3, "cam", 5)[0] == A and r3.history == []
    with pytest.raises(R.RoutingError, match="no earlier active"):
        R.rollback(r3)


def test_canary_by_camera_is_stable_and_near_its_percentage():
    r = R.set_canary(R.initial(A), B, 20)
    cams = [f"cam-{i}" for i in range(2000)]
    on_canary = {c for c in cams if R.route(r, c, 0)[0] == B}
    assert 0.17 < len(on_canary) / len(cams) < 0.23
    # A camera stays on its side for all its frames, and a bigger share keeps the cameras already in.
    assert all(R.route(r, c, seq)[0] == B for c in list(on_canary)[:20] for seq in range(10))
    wider = R.set_canary(r, B, 50)
    assert on_canary <= {c for c in cams if R.route(wider, c, 0)[0] == B}


def test_canary_by_frame_splits_one_camera_s_frames():
    r = R.set_canary(R.initial(A), B, 30, by_key="frame")
    share = sum(R.route(r, "cam-1", s)[0] == B for s in range(5000)) / 5000
    assert 0.27 < share < 0.33


def test_rollback_of_a_canary_ends_the_canary_only():
    r = R.rollback(R.set_canary(R.promote(R.initial(A), B), C, 10))
    assert r.groups["default"].canary is None and r.groups["default"].active == B
    with pytest.raises(R.RoutingError, match="already the active"):
        R.set_canary(r, B, 10)
    with pytest.raises(R.RoutingError, match="0..100"):
        R.set_canary(r, C, 120)


def test_promoting_the_canary_ends_the_canary():
    r = R.promote(R.set_canary(R.initial(A), B, 10), B)
    assert r.groups["default"].active == B and r.groups["default"].canary is None


def test_groups_route_their_cameras_and_shadows_run_beside():
    r = R.promote(R.initial(A), C, group="lobby", cameras=["cam-lobby"])
    r = R.set_shadow(r, B, group="lobby")
    assert R.route(r, "cam-lobby", 1) == (C, B)
    assert R.route(r, "cam-gate", 1) == (A, "")
    assert R.models_in_use(r) == {A, B, C}
    assert R.role_of(r, B) == [("lobby", "shadow")]
    assert R.route(R.set_shadow(r, "", group="lobby"), "cam-lobby", 1) == (C, "")
    with pytest.raises(R.RoutingError, match="does not exist yet"):
        R.promote(r, B, group="dock")
    with pytest.raises(R.RoutingError, match="no camera group 'dock'"):
        R.set_shadow(r, B, group="dock")


def test_withdraw_takes_a_failing_model_out_of_every_role():
    r = R.promote(R.initial(A), B)  # default: B (was A)
    r = R.set_shadow(R.promote(r, B, group="lobby", cameras=["cam-lobby"]), C, group="lobby")
    r = R.set_canary(r, C, 25)
    out = R.withdraw(r, C, by="detector", reason="run failed")
    assert out.revision == r.revision + 1 and out.by == "detector"
    assert C not in R.models_in_use(out)
    with pytest.raises(R.RoutingError, match="'lobby' has no earlier active"):
        R.withdraw(out, B)  # active in lobby too, which has nothing to go back to
    assert R.withdraw(out, "other:9") is out
    back = R.withdraw(R.promote(R.initial(A), B), B, by="detector")
    assert back.groups["default"].active == A and back.revision == 3  # one revision for the whole withdrawal


def test_routing_round_trips_and_its_contract_is_checked():
    r = R.set_canary(R.initial(A), B, 5)
    assert contracts.decode(contracts.encode(r), contracts.ModelRouting) == r
    bad = contracts.ModelRouting(revision=1, updated_ms=0.0, groups={"x": contracts.GroupRoute(active=A)})
    with pytest.raises(contracts.ContractError, match="default"):
        contracts.decode(contracts.encode(bad), contracts.ModelRouting)
