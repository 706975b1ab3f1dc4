"""KITTI object labels (`label_2/<image>.txt`): one object a line, 15 space-separated fields: type,
truncated, occluded, alpha, the 2D box (left, top, right, bottom in image pixels), then 3D dimensions,
location and rotation, which DetectNet_v2 does not read. TAO's loaders take the first 8 fields."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class LabelError(ValueError):
    """A label file that cannot be read. Names the file and line."""


@dataclass(frozen=True)
class KittiObject:
    kind: str  # the class name as written, e.g. "Car"
    truncated: float
    occluded: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels


def read_labels(path: str | Path) -> list[KittiObject]:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read KITTI label file {path}: {exc}") from None
    objects = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise LabelError(f"{path}:{number}: a KITTI label needs at least 8 fields (type, truncated, occluded, "
                             f"alpha, left, top, right, bottom), found {len(fields)}")
        try:
            truncated, occluded = float(fields[1]), int(float(fields[2]))
            x1, y1, x2, y2 = (float(v) for v in fields[4:8])
        except ValueError:
            raise LabelError(f"{path}:{number}: expected numbers after the type, found {line.strip()[:80]!r}") from None
        if not (x2 >= x1 and y2 >= y1):
            raise LabelError(f"{path}:{number}: the box {x1} {y1} {x2} {y2} has right < left or bottom < top")
        objects.append(KittiObject(fields[0], truncated, occluded, (x1, y1, x2, y2)))
    return objects
