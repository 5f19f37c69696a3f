"""environ.scoped sets variables for a block and restores each one as it was."""

from __future__ import annotations

import os

import pytest

from biovita_data.core import environ


def test_scoped_sets_then_restores_or_removes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOVITA_T_SET", "before")
    monkeypatch.delenv("BIOVITA_T_NEW", raising=False)
    monkeypatch.setenv("BIOVITA_T_KEPT", "kept")
    values = {"BIOVITA_T_SET": "a", "BIOVITA_T_NEW": "b", "BIOVITA_T_KEPT": None}
    with pytest.raises(RuntimeError), environ.scoped(values):
        assert (os.environ["BIOVITA_T_SET"], os.environ["BIOVITA_T_NEW"]) == ("a", "b")
        assert os.environ["BIOVITA_T_KEPT"] == "kept"  # None: left as it is
        raise RuntimeError("the block fails")
    assert os.environ["BIOVITA_T_SET"] == "before"
    assert "BIOVITA_T_NEW" not in os.environ
    assert os.environ["BIOVITA_T_KEPT"] == "kept"
