from types import SimpleNamespace

from inventory.domain.reservation import Shortfall, decide, requested_quantities


def line(sku: str, quantity: int) -> SimpleNamespace:
    return SimpleNamespace(sku=sku, quantity=quantity)


def test_lines_for_one_sku_add_up_in_sku_order() -> None:
    assert list(requested_quantities([line("B", 1), line("A", 2), line("B", 3)]).items()) == [
        ("A", 2),
        ("B", 4),
    ]


def test_order_is_reserved_when_every_line_fits() -> None:
    decision = decide({"A": 2, "B": 5}, {"A": 2, "B": 9})
    assert decision.accepted
    assert decision.shortfalls == ()


def test_one_short_line_rejects_the_whole_order_and_says_why_per_line() -> None:
    decision = decide({"A": 2, "B": 5, "C": 1}, {"A": 9, "B": 4})
    assert not decision.accepted
    assert decision.shortfalls == (
        Shortfall("B", 5, 4, "insufficient_stock"),
        Shortfall("C", 1, 0, "unknown_sku"),
    )
