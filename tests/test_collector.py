"""The garbage collector while channels run (`lipon_hw.collector.rarely`)."""

import gc

import pytest

from lipon_hw import collector


def test_rarely_freezes_what_exists_and_gives_the_collector_back():
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with collector.rarely():
        assert gc.get_threshold()[0] == collector.COLLECT_AFTER
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > frozen
        with collector.rarely():  # nested: the inner end leaves it as it is
            pass
        assert gc.get_threshold()[0] == collector.COLLECT_AFTER
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_rarely_gives_the_collector_back_when_the_run_fails():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), collector.rarely():
        raise RuntimeError("a channel failed")
    assert gc.get_threshold() == before


def test_garbage_cycles_are_still_collected_inside():
    class Node:
        pass

    with collector.rarely():
        a, b = Node(), Node()
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2  # a collection (rarer, or asked for) still finds them
