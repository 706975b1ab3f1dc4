"""Progress: a bar on a terminal, whole lines anywhere else (`dvc queue logs`, CI, a file)."""
from __future__ import annotations

import io

from stages.pipeline import progress as progress_module
from stages.pipeline.progress import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_progress_is_whole_lines_and_a_last_line_with_the_count(monkeypatch):
    monkeypatch.setattr(progress_module, "LINE_EVERY", 0.0)  # a line at every update
    stream = io.StringIO()
    with progress(3, "evaluate", unit="image", stream=stream) as bar:
        for _ in range(3):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[:2] == ["evaluate: 1/3 images", "evaluate: 2/3 images"]
    assert lines[2].startswith("evaluate: 3/3 images in ") and lines[2].endswith(" s")


def test_off_a_terminal_a_fast_loop_writes_one_line(monkeypatch):
    stream = io.StringIO()
    with progress(100, "tensorfile", stream=stream) as bar:
        for _ in range(100):
            bar.update(1)
    [line] = stream.getvalue().splitlines()
    assert line.startswith("tensorfile: 100/100 batches in ")


def test_on_a_terminal_it_is_a_bar():
    stream = Terminal()
    with progress(2, "evaluate", unit="image", stream=stream) as bar:
        bar.update(2)
    assert "\r" in stream.getvalue()
