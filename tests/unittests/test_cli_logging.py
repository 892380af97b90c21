"""`speechpos.cli.main` called from Python leaves the process's logging as it found it."""

import io
import logging
import sys

from speechpos.cli import main


def test_cli_call_leaves_no_handler_on_a_stream_that_goes_away(tmp_path, monkeypatch, capsys):
    logger = logging.getLogger("speechpos")
    before = (list(logger.handlers), logger.level, logger.disabled)
    call_stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", call_stderr)
    assert main(["keyword", str(tmp_path), str(tmp_path / "clip.wav")]) == 2
    assert "speechpos: error:" in call_stderr.getvalue()
    call_stderr.close()  # as pytest closes a finished test's captured stderr
    monkeypatch.undo()

    assert (list(logger.handlers), logger.level, logger.disabled) == before
    logging.getLogger("speechpos.speech").warning("a later record, e.g. a recipe's data preparation")
    assert "Logging error" not in capsys.readouterr().err
