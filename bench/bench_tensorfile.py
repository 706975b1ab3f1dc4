"""Tensorfile generation throughput vs the bound (the same images decoded, resized and scaled on
all cores, nothing written), and peak memory at 4 vs 40 batches. Figures measured in one run.

    python bench/bench_tensorfile.py
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from _common import PEAK_SNIPPET, best_of, child_peak_rss_mib, sample_images

from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.tensorfile import TensorFileWriter

WIDTH, HEIGHT, BATCH = 624, 192, 8

WRITE_SNIPPET = """
import sys
from stages.detectnet_v2.preprocessing import iter_batches, list_images
from stages.formats.tensorfile import TensorFileWriter
images = list_images(sys.argv[1])[: int(sys.argv[2]) * 8]
with TensorFileWriter(sys.argv[3], None if sys.argv[4] == "none" else sys.argv[4]) as w:
    for batch in iter_batches(images, 8, 624, 192, reuse=True):
        w.write(batch)
""" + PEAK_SNIPPET


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = sample_images(tmp / "data", 40 * BATCH)
        images = list_images(folder)[: 10 * BATCH]

        def bound():
            for _ in iter_batches(images, BATCH, WIDTH, HEIGHT):
                pass

        def ours(compression):
            def write():
                with TensorFileWriter(tmp / "out.tensor", compression) as writer:
                    for batch in iter_batches(images, BATCH, WIDTH, HEIGHT, reuse=True):
                        writer.write(batch)
            return write

        bound_s = best_of(3, bound)
        print(f"tensorfile: 10 batches of {BATCH} KITTI-sized PNGs -> {WIDTH}x{HEIGHT}")
        print(f"  bound (decode+resize+scale, all cores, nothing written): {bound_s:.3f} s")
        for compression in (None, "lzf", "gzip"):
            seconds = best_of(3, ours(compression))
            print(f"  ours, compression={str(compression):5s}: {seconds:.3f} s   "
                  f"throughput = {bound_s / seconds:.2f} x the bound")

        peaks = {n: child_peak_rss_mib(WRITE_SNIPPET, str(folder), str(n), str(tmp / f"{n}.tensor"), "none")
                 for n in (4, 40)}
        print(f"  peak memory: 4 batches {peaks[4]:.0f} MiB, 40 batches {peaks[40]:.0f} MiB, "
              f"ratio {peaks[40] / peaks[4]:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
