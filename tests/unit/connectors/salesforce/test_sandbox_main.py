"""``python -m connectors.salesforce.sandbox --schema FILE``: a bad file is a usage error."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.salesforce.sandbox.__main__ import main


def test_a_schema_file_that_is_not_json_is_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "objects.json"
    path.write_text("[\n  {,\n]\n")
    with pytest.raises(SystemExit) as exited:
        main(["--schema", str(path)])
    assert exited.value.code == 2
    assert f"{path}:2:4: bad JSON: Expecting property name" in capsys.readouterr().err


def test_a_missing_schema_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--schema", str(tmp_path / "nope.json")])
    assert exited.value.code == 2
    assert "nope.json: no such file" in capsys.readouterr().err
