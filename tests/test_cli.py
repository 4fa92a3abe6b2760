"""The command line's error contract: every usage mistake is one ``error:`` line and exit 2."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "argv, line",
    [
        (["acts", "import"], "error: missing option '--from'; see rlsae acts import --help"),
        (
            ["sae", "train", "--acts", "a", "--out", "b", "--bogus", "1"],
            "error: no such option: --bogus",
        ),
        (
            ["dqn", "eval", "--agent", "a", "--episodes", "abc"],
            "error: invalid value for '--episodes'",
        ),
        (["nonexistent"], "error: no such command 'nonexistent'; see rlsae --help"),
        (["acts", "import", "--from"], "error: option '--from' requires an argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(run_cli, argv, line):
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(line), err
    assert "--help" in err and "Traceback" not in err and "╭" not in err


def test_a_library_error_is_one_line_too(run_cli, tmp_path):
    code, out, err = run_cli(
        "acts", "import", "--from", str(tmp_path / "no.npy"), "--out", str(tmp_path / "o")
    )
    assert code == 2 and out == "" and err == f"error: {tmp_path / 'no.npy'} not found\n"
    assert not (tmp_path / "o").exists()


def test_no_arguments_print_the_help_and_succeed(run_cli):
    code, out, err = run_cli()
    assert code == 0 and "Usage" in out and "pipeline" in out and err == ""
    code, out, _ = run_cli("sae")
    assert code == 0 and "train" in out and "eval" in out
    code, out, _ = run_cli("--help")
    assert code == 0 and "Usage" in out
