"""Ctrl-C during a run: the first sets the stop flag and says so, the second aborts; the notice can never turn
a clean stop into a traceback (CI once caught the signal inside Rich's first import of its emoji table)."""

from __future__ import annotations

import os
import signal
import sys
import types

import pytest

from nvrag.app.cli_common import INTERRUPT_NOTICE, interruptible


def test_first_ctrl_c_requests_a_stop_and_the_second_aborts(capsys: pytest.CaptureFixture[str]) -> None:
    with interruptible() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert INTERRUPT_NOTICE in capsys.readouterr().err


def test_the_notice_survives_a_signal_during_richs_own_import(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What the main thread leaves behind when the signal lands mid-import: a module object without its names.
    monkeypatch.setitem(sys.modules, "rich._emoji_codes", types.ModuleType("rich._emoji_codes"))
    with interruptible() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
    assert INTERRUPT_NOTICE in capsys.readouterr().err


def test_the_previous_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with interruptible():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
