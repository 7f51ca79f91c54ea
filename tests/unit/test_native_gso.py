"""wgpy._offload.gso_run against its reference io/batch.gso_run_py: the same UDP GSO runs (stop, segment size,
joined bytes) for any list of (datagram, endpoint) pairs: equal and unequal endpoints (equal but not identical
tuples too), sizes up and down, the segment and byte limits, runs of one. Skips when the module is not built."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.io.batch import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, gro_split_py, gso_run_py

try:
    from wgpy import _offload as _c
except ImportError as e:            # pragma: no cover - CI builds it (test_native_offload enforces that)
    _c = None
    _why = str(e)
else:
    _why = ""

pytestmark = pytest.mark.skipif(_c is None, reason=f"wgpy._offload is not built ({_why})")

EPS = [("192.0.2.1", 51820), ("192.0.2.2", 51820), ("2001:db8::1", 51820, 0, 0)]


@st.composite
def batches(draw):
    n = draw(st.integers(1, 150))
    out = []
    for _ in range(n):
        size = draw(st.sampled_from((32, 100, 1000, 1452, 1452, 1452, 1500, 3000)))
        ep = draw(st.sampled_from(EPS))
        out.append((bytes([len(out) & 0xFF]) * size, (ep[0] + "", *ep[1:])))   # equal, not the same object
    return out


@settings(max_examples=400, deadline=None)
@given(batches(), st.integers(1, 70), st.sampled_from((3000, 20000, GSO_MAX_BYTES, 1 << 20)), st.data())
def test_gso_run_is_the_reference(out, max_seg, max_bytes, data) -> None:
    i = data.draw(st.integers(0, len(out) - 1))
    assert _c.gso_run(out, i, max_seg, max_bytes) == gso_run_py(out, i, max_seg, max_bytes)


def test_a_whole_batch_walks_the_same_runs() -> None:
    out = [(b"x" * 1452, EPS[0])] * 100 + [(b"y" * 80, EPS[0]), (b"z" * 1452, EPS[1])] + [(b"w" * 600, EPS[1])] * 3
    runs_c, runs_py, i = [], [], 0
    while i < len(out):
        rc, rp = _c.gso_run(out, i, GSO_MAX_SEGMENTS, GSO_MAX_BYTES), gso_run_py(out, i, GSO_MAX_SEGMENTS,
                                                                                  GSO_MAX_BYTES)
        runs_c.append(rc[:2])
        runs_py.append(rp[:2])
        assert rc == rp
        i = rc[0]
    # 44 x 1452 fill 65000; the 80-byte datagram ends the third run; one 600 joins the lone 1452 after it
    assert runs_c == [(44, 1452), (88, 1452), (101, 1452), (103, 1452), (105, 600)]


def test_items_it_cannot_judge_go_back_to_python() -> None:
    assert _c.gso_run([(bytearray(10), EPS[0])], 0, 64, 65000) is None
    # a non-bytes datagram inside a run ends it
    assert _c.gso_run([(b"a" * 10, EPS[0]), (bytearray(10), EPS[0])], 0, 64, 65000) == (1, 10, b"a" * 10)
    with pytest.raises(ValueError):
        _c.gso_run([(b"a", EPS[0])], 1, 64, 65000)
    with pytest.raises(TypeError):
        _c.gso_run((), 0, 64, 65000)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=5000), st.integers(1, 2000))
def test_gro_split_is_the_reference(data, seg) -> None:
    src = ("192.0.2.9", 4242)
    got, want = [], []
    assert _c.gro_split(data, seg, src, got) == gro_split_py(data, seg, src, want)
    assert got == want
    assert all(s is src for _d, s in got)


def test_gro_split_refuses_what_it_cannot_cut() -> None:
    with pytest.raises(ValueError):
        _c.gro_split(b"abc", 0, None, [])
    with pytest.raises(TypeError):
        _c.gro_split(bytearray(b"abc"), 1, None, [])
