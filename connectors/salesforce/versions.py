"""The CRM writer's memory of record versions: which ``Bus_Seq__c`` each record holds.

The writer reads a record's stored seq (its version guard) only when this cache does not know
it; see :mod:`connectors.salesforce.writer` for why that is safe.
"""

from __future__ import annotations

from collections import OrderedDict

#: Records remembered per writer (about 50 MB when full).
CACHE_RECORDS = 100_000

_Known = tuple[float | None, str | None]


class VersionCache:
    """What the CRM holds of the records this writer read or wrote: ``Id`` and ``Bus_Seq__c``.

    Looked up per object by the keys the writer makes (``id:<18-char id>``, ``ext:<external
    id lowercased>``); the seq is held once per record, so a write through one key shows through
    the other. Least recently used records go beyond ``max_records``. One write at a time.
    """

    def __init__(self, max_records: int = CACHE_RECORDS) -> None:
        if max_records < 0:
            raise ValueError("max_records must be >= 0")
        self.max_records = max_records
        #: (object, Id) -> (stored Bus_Seq__c or None, the record's ext key or None)
        self._records: OrderedDict[tuple[str, str], _Known] = OrderedDict()
        self._ext: dict[tuple[str, str], str] = {}  # (object, ext key) -> Id
        self.hits = self.misses = 0  # lookups answered / not answered (records to read)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, object_name: str, key: str) -> tuple[str, float | None] | None:
        """``(Id, stored seq)`` of the record ``key`` names, or None when not known."""
        rid = key[3:] if key.startswith("id:") else self._ext.get((object_name, key))
        known = self._records.get((object_name, rid)) if rid else None
        if rid is None or known is None:
            self.misses += 1
            return None
        self.hits += 1
        self._records.move_to_end((object_name, rid))
        return rid, known[0]

    def put(self, object_name: str, rid: str, seq: float | None, ext_key: str | None) -> None:
        """The CRM holds ``seq`` on record ``rid`` (also named ``ext_key``, when known)."""
        old = self._records.pop((object_name, rid), None)
        if old is not None and old[1] and ext_key is None:
            ext_key = old[1]
        elif old is not None and old[1]:
            self._unalias(object_name, old[1], rid)
        self._records[(object_name, rid)] = (seq, ext_key)
        if ext_key:
            self._ext[(object_name, ext_key)] = rid
        while len(self._records) > self.max_records:
            (obj, gone), (_, ext) = self._records.popitem(last=False)
            if ext:
                self._unalias(obj, ext, gone)

    def evict(self, object_name: str, rid: str) -> None:
        """Forget record ``rid``: its next write reads it again."""
        old = self._records.pop((object_name, rid), None)
        if old is not None and old[1]:
            self._unalias(object_name, old[1], rid)

    def _unalias(self, object_name: str, ext_key: str, rid: str) -> None:
        if self._ext.get((object_name, ext_key)) == rid:
            del self._ext[(object_name, ext_key)]
