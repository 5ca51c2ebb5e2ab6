from ferstudy.report import pareto_front


def test_pareto_front():
    points = {"a": (0.60, 10.0), "b": (0.55, 100.0), "c": (0.50, 50.0), "d": (0.65, 5.0)}
    assert pareto_front(points) == ["b", "a", "d"]  # c is beaten by b on both
