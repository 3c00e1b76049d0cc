"""Read back the TensorBoard event files the trainers write (report_to="tensorboard", via tensorboardX),
without TensorBoard: ``scalars(log_dir)`` -> {tag: [(step, value), ...]}. To browse them:
``pip install tensorboard && tensorboard --logdir <workspace>``."""
from __future__ import annotations

import struct
from pathlib import Path


def _records(path: Path):
    data = path.read_bytes()
    k = 0
    while k + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[k:k + 8])
        start = k + 12  # length (8) + its CRC (4)
        if start + n + 4 > len(data):
            return  # a record still being written
        yield data[start:start + n]
        k = start + n + 4  # payload + its CRC


def scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``log_dir`` (recursively), by tag, in step order."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        if not path.is_file():
            continue
        for raw in _records(path):
            event = event_pb2.Event.FromString(raw)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return {tag: sorted(points) for tag, points in out.items()}
