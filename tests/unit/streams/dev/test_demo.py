"""``paybus dev``'s output and its run folder, without starting the stack."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streams.dev import demo
from streams.dev.scenario import Row
from streams.settings import Settings
from streams.terminal import make_console


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the demo prints, as to a file (not a terminal)."""
    buffer = io.StringIO()
    monkeypatch.setattr(demo, "console", make_console(stream=buffer))
    monkeypatch.setattr(demo.signal, "signal", lambda *args: None)  # keep pytest's SIGTERM
    return buffer


def test_a_clean_run_removes_its_folder_unless_asked_to_keep_it(tmp_path: Path) -> None:
    gone, kept, failed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (gone, kept, failed):
        (folder / "worker").mkdir(parents=True)
        (folder / "worker.log").write_text("log")
    assert demo.settle_data_dir(gone, failed=False, keep=False) is None
    assert not gone.exists()
    assert demo.settle_data_dir(kept, failed=False, keep=True) == f"logs kept in {kept}"
    note = demo.settle_data_dir(failed, failed=True, keep=False)
    assert note is not None and str(failed) in note and "failed" in note
    assert kept.exists() and failed.exists()


class Stack:
    """A DevStack stand-in: records where its folder is and fails (or is interrupted) at start."""

    made: list[Path] = []

    def __init__(self, settings: Settings, data_dir: Path, web_port: int) -> None:
        self.data_dir = data_dir
        Stack.made.append(data_dir)

    def start(self) -> Any:
        raise self.error

    def stop(self) -> None:
        pass


def test_a_failed_run_keeps_its_folder_and_says_where(
    out: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Stack, "error", RuntimeError("worker exited 1"), raising=False)
    monkeypatch.setattr(demo, "DevStack", Stack)
    with pytest.raises(RuntimeError):
        demo.run_demo(Settings(), once=True)
    folder = Stack.made[-1]
    assert folder.exists() and f"its logs are kept in {folder}" in out.getvalue()
    demo.shutil.rmtree(folder)


def test_an_interrupted_run_removes_its_folder(
    out: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Stack, "error", KeyboardInterrupt(), raising=False)
    monkeypatch.setattr(demo, "DevStack", Stack)
    assert demo.run_demo(Settings(), once=False) == 0
    assert not Stack.made[-1].exists()
    assert "kept" not in out.getvalue()


class Story:
    def __init__(self, statuses: list[str]) -> None:
        self.rows = {
            f"demo-card-0{i}": Row("payment", f"demo-card-0{i}", "r", "stripe", "card", status)
            for i, status in enumerate(statuses)
        }

    def settled(self) -> int:
        return sum(r.crm_status == "confirmed" for r in self.rows.values())


def test_progress_off_a_terminal_is_a_plain_line_when_something_changed(out: io.StringIO) -> None:
    counts = Counter(applied=3, duplicate=1)
    with demo._Display() as display:
        assert display.live is None
        display.show(Story(["confirmed", ""]), counts)  # type: ignore[arg-type]
        display.show(Story(["confirmed", ""]), counts)  # type: ignore[arg-type]
        display.show(Story(["confirmed", "confirmed"]), counts)  # type: ignore[arg-type]
    assert out.getvalue().splitlines() == [
        "records final 1/2 | applied 3 duplicate 1 stale 0 held 0 rejected 0 dlq 0",
        "records final 2/2 | applied 3 duplicate 1 stale 0 held 0 rejected 0 dlq 0",
    ]
