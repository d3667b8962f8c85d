"""The watermark topic's read rule: the last value of the key wins, a tombstone clears it."""

from __future__ import annotations

import datetime as dt

from connectors.salesforce.poller import Cursor, Watermark
from streams.watermarks import latest_for_key, watermark_topic


def test_last_value_of_the_key_wins_and_other_keys_are_ignored() -> None:
    records = [(b"a", b"1"), (b"b", b"x"), (b"a", b"2"), (b"b", b"y")]
    assert latest_for_key(records, b"a", None) == b"2"
    assert latest_for_key([(b"b", b"z")], b"a", b"2") == b"2"  # nothing new for the key


def test_a_tombstone_clears_the_value() -> None:
    assert latest_for_key([(b"a", b"1"), (b"a", None)], b"a", None) is None
    assert latest_for_key([(b"a", None), (b"a", b"3")], b"a", b"1") == b"3"


def test_the_topic_is_compacted_and_watermarks_round_trip() -> None:
    spec = watermark_topic("p.crm.watermarks", replication_factor=3)
    assert spec.configs == {"cleanup.policy": "compact"}
    assert (spec.partitions, spec.replication_factor) == (1, 3)
    stamp = dt.datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)
    mark = Watermark({"Payment__c": Cursor(stamp, "a01000000000001AAA")})
    assert Watermark.from_json(mark.to_json()) == mark
