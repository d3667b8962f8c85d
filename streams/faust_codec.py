"""Faust codecs over :class:`streams.codec.AvroCodec`, one per schema.

Faust hands a codec the record's ``asdict()`` when sending and expects a mapping back when
receiving; the record class named by the codec is then built from it.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from streams.codec import AvroCodec
from streams.records import _MAP_FIELDS, RECORDS, codec_name


class FaustAvroCodec(codecs.Codec):
    """Encode/decode one schema's records in the configured Avro wire format."""

    def __init__(self, avro: AvroCodec, schema: str) -> None:
        super().__init__(avro=avro, schema=schema)
        self.avro = avro
        self.schema = schema

    def _dumps(self, obj: Any) -> bytes:
        data = dict(obj)
        for key in _MAP_FIELDS.intersection(data):
            if data[key] is None:
                data[key] = {}
        if data.get("error_log", ()) is None:
            data["error_log"] = []
        return self.avro.encode(self.schema, data)

    def _loads(self, s: bytes) -> Any:
        return self.avro.decode(s, self.schema)


def register_codecs(avro: AvroCodec) -> None:
    """Register (or re-register) the codec of every paybus record with Faust."""
    for name in RECORDS:
        codecs.register(codec_name(name), FaustAvroCodec(avro, name))
