"""Greedy NMS on hand-made boxes: suppression, the IoU edge, per-group independence, caps."""

import numpy as np

from aimass_detector.nms import batched_nms, iou, nms


def test_iou_known_values():
    a = np.array([0.0, 0.0, 2.0, 2.0])
    others = np.array([[0, 0, 2, 2], [1, 0, 3, 2], [2, 2, 3, 3], [0, 0, 0, 0]], dtype=float)
    # identical, half-overlapping (2/6), touching corner (0), degenerate (0 without dividing by 0)
    np.testing.assert_allclose(iou(a, others), [1.0, 1 / 3, 0.0, 0.0])


def test_overlapping_lower_score_is_suppressed_disjoint_kept():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]  # IoU(0,1) = 81/100


def test_result_is_ordered_by_score_not_input_order():
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [10, 10, 11, 11]], dtype=float)
    assert nms(boxes, np.array([0.2, 0.9, 0.5]), 0.5).tolist() == [1, 2, 0]


def test_iou_exactly_at_threshold_is_kept_just_above_is_suppressed():
    # inter 2, union 4: IoU exactly 0.5
    boxes = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], dtype=float)
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_greedy_chain_suppressed_box_does_not_suppress():
    # A overlaps B (IoU 0.6), B overlaps C (0.6), A and C overlap 1/3: B goes, C stays.
    boxes = np.array([[0, 0, 8, 1], [2, 0, 10, 1], [4, 0, 12, 1]], dtype=float)
    np.testing.assert_allclose(iou(boxes[0], boxes[1:]), [0.6, 1 / 3])
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.55).tolist() == [0, 2]


def test_classes_are_independent():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    groups = np.array([0, 1, 0, 1])
    # the identical box of group 1 survives group 0's winner; group 0's copy does not
    assert batched_nms(boxes, scores, groups, 0.5).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]


def test_offset_trick_works_with_negative_coordinates():
    boxes = np.array([[-50, -50, -40, -40], [-50, -50, -40, -40]], dtype=float)
    assert batched_nms(boxes, np.array([0.5, 0.6]), np.array([0, 1]), 0.5).tolist() == [1, 0]


def test_max_detections_and_empty():
    boxes = np.array([[i * 10, 0, i * 10 + 5, 5] for i in range(5)], dtype=float)
    scores = np.linspace(0.9, 0.5, 5)
    assert nms(boxes, scores, 0.5, max_detections=2).tolist() == [0, 1]
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).tolist() == []
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).dtype == np.int64
