"""TensorBoard event files, written directly: no TensorFlow, and no library that imports torch.

An event file is a TFRecord file of ``Event`` protocol buffers (TensorFlow's
``core/util/event.proto``). Each record is the record's length (8 bytes, little-endian), a
masked CRC-32C of those 8 bytes (4), the record, and its masked CRC-32C (4). The few messages
a run's scalars need are encoded here by hand:

- ``Event``: ``wall_time`` (field 1, double), ``step`` (2, int64), ``file_version`` (3,
  string), ``summary`` (5), ``session_log`` (7);
- ``Summary``: repeated ``value`` (1), each a ``tag`` (1, string) and a ``simple_value``
  (2, float);
- ``SessionLog``: ``status`` (1; ``START`` = 1).

A file starts with the ``file_version`` event ``"brain.Event:2"``. A session start at step
``s`` makes TensorBoard drop the values read before it at steps ``>= s``: a resumed run writes
one, so the steps logged after the checkpoint it restarts from show once.

(tensorboardX writes the same files, but importing it imports torch where torch is installed:
7.6 s of the LM experiment's 14 s of imports, measured here on a busy 2-core machine.)
"""

import os
import pathlib
import socket
import struct
import time

import numpy as np


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):  # the Castagnoli polynomial, bit-reversed
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's mask: the CRC rotated right by 15 bits plus a constant, modulo 2**32."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 as its two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def event(
    step: int,
    *,
    scalars: dict[str, float] | None = None,
    file_version: str | None = None,
    session_start: bool = False,
) -> bytes:
    """One serialized ``Event``: scalars as ``simple_value``s (float32), a file version, or a
    session start."""
    out = _key(1, 1) + struct.pack("<d", time.time())
    out += _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        with np.errstate(over="ignore"):  # float32, as TensorBoard keeps them: past range, inf
            values = [np.float32(v).tobytes() for v in scalars.values()]
        summary = b"".join(
            _bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, 5) + value)
            for tag, value in zip(scalars, values, strict=True)
        )
        out += _bytes_field(5, summary)
    if session_start:
        out += _bytes_field(7, _key(1, 0) + _varint(1))
    return out


class EventWriter:
    """Appends scalar events to a new event file in ``directory``, flushed at each write.

    ``purge_step``: write a session start at that step first (a resumed run's first step), so
    TensorBoard hides what an earlier session logged from there on.
    """

    def __init__(self, directory: pathlib.Path, purge_step: int | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        path, count = directory / name, 0
        while path.exists():  # a second writer in the same process and second
            count += 1
            path = directory / f"{name}.{count}"
        self.path = path
        self._file = path.open("xb")
        self._write(event(0, file_version="brain.Event:2"))
        if purge_step is not None:
            self._write(event(purge_step, session_start=True))

    def _write(self, data: bytes) -> None:
        self._file.write(record(data))
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._write(event(step, scalars=values))

    def close(self) -> None:
        self._file.close()
