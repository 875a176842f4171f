"""The request path's memos stay bounded: past the limit a memo starts over instead of growing."""

from ngm.dataplane.memo import keep


def test_a_memo_keeps_what_it_is_given_up_to_its_limit_then_starts_over():
    memo: dict = {}
    assert [keep(memo, k, k * 10, 3) for k in range(3)] == [0, 10, 20]
    assert memo == {0: 0, 1: 10, 2: 20}
    assert keep(memo, 1, 11, 3) == 11  # full: a fourth key or a key again both start it over
    assert memo == {1: 11}
    for k in range(100):
        keep(memo, k, k, 3)
    assert len(memo) <= 3 and memo[99] == 99
