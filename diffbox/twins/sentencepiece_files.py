"""SentencePiece ``ModelProto`` files (what ``spiece.model`` holds), written and read by hand: the protobuf
package is not a dependency, and the few fields a Unigram model needs are plain protobuf wire format
(sentencepiece's ``sentencepiece_model.proto``)."""

from __future__ import annotations

import functools
import struct

# ModelProto.SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 fields are 10-byte two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes(number: int, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _field(number, 2, _varint(len(data)) + data)


def _number(number: int, value: int) -> bytes:
    return _field(number, 0, _varint(value))


def unigram_model(pieces: list[tuple[str, float, int]], *, unk_id: int, bos_id: int = -1, eos_id: int = 1,
                  pad_id: int = 0, byte_fallback: bool = False, charsmap: bytes = b"") -> bytes:
    """A Unigram ``ModelProto``: ``pieces`` as (piece, score, type); the special ids and byte fallback in its
    TrainerSpec; a NormalizerSpec named nmt_nfkc carrying ``charsmap`` (or "identity" without one), adding
    the dummy prefix and collapsing whitespace as spm_train's defaults do."""
    model = b"".join(_bytes(1, _bytes(1, piece) + _field(2, 5, struct.pack("<f", score)) + _number(3, kind))
                     for piece, score, kind in pieces)
    trainer = (_number(3, 1) + _number(4, len(pieces)) + (_number(35, 1) if byte_fallback else b"")
               + _number(40, unk_id) + _number(41, bos_id) + _number(42, eos_id) + _number(43, pad_id))
    normalizer = (_bytes(1, "nmt_nfkc" if charsmap else "identity") + (_bytes(2, charsmap) if charsmap else b"")
                  + _number(3, 1) + _number(4, 1) + _number(5, 1))
    return model + _bytes(2, trainer) + _bytes(3, normalizer)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def read_bytes_field(data: bytes, number: int) -> bytes:
    """The first length-delimited field ``number`` of a protobuf message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if key >> 3 == number:
                return data[pos:pos + length]
            pos += length
        else:
            pos += 8 if wire == 1 else 4
    raise KeyError(f"no field {number}")


@functools.cache
def nmt_nfkc_charsmap() -> bytes:
    """sentencepiece's built-in nmt_nfkc normalization table (NFKC plus its own whitespace rules), the one
    every model trained with spm_train's default rule embeds; taken from a throwaway model trained in
    milliseconds, since sentencepiece exposes it no other way. Deterministic: the table is compiled in."""
    import io

    import sentencepiece

    trained = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(["a"]), model_writer=trained, vocab_size=300,
                                             model_type="char", hard_vocab_limit=False, minloglevel=2)
    return read_bytes_field(read_bytes_field(trained.getvalue(), 3), 2)
