"""Every numeric or list option of every command: a bad value is one argparse usage line
(exit 2, naming the option), before anything is loaded or run."""

from __future__ import annotations

import argparse

import pytest

from squeezenet.cli.common import bits, bits_per_layer, output_file
from squeezenet.cli.main import build_parser

# int with choices: argparse checks the choice
UNTYPED_NUMERIC_ALLOWED = {("train", "--in-chans"), ("export", "--squeeze-bits"), ("export", "--stem-bits")}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _bad_values(action: argparse.Action) -> list[str]:
    """Values outside what ``action`` accepts: not a number, and beyond each end of its range."""
    if action.choices is not None:
        return ["no-such-choice"]
    if action.type in (bits, bits_per_layer):
        return ["x", "0", "13", *(["conv=99"] if action.type is bits_per_layer else [])]
    bounds = getattr(action.type, "bounds", None)
    values = ["x"]
    if bounds is None:
        return values
    if bounds.integer:
        values.append("1.5")
    if bounds.low is not None:
        values.append(repr(bounds.low if bounds.low_open else bounds.low - 1))
    if bounds.high is not None:
        values.append(repr(bounds.high + 1 if not bounds.high_open else bounds.high))
    return values


def _checked_options() -> list[tuple[str, str, str]]:
    cases = []
    for command, parser in _subcommands().items():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            numeric = action.type is not None and action.type not in (str, output_file)
            if not numeric and action.choices is None:
                continue
            option = max(action.option_strings, key=len)
            cases += [(command, option, value) for value in _bad_values(action)]
    return cases


CASES = _checked_options()


def test_every_numeric_option_has_a_range():
    """int/float without a range would let 0 or -1 through to the library (or to PyTorch)."""
    plain = [
        (command, max(a.option_strings, key=len))
        for command, parser in _subcommands().items()
        for a in parser._actions
        if a.type in (int, float)
    ]
    assert set(plain) <= UNTYPED_NUMERIC_ALLOWED, plain
    assert len(CASES) > 60  # every command's numeric and list options are here


@pytest.mark.parametrize(("command", "option", "value"), CASES, ids=[f"{c} {o} {v}" for c, o, v in CASES])
def test_bad_value_is_one_usage_line(capsys, command, option, value):
    from squeezenet.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"squeezenet {command}: error: argument {option}"), err


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_a_file_output_to_a_terminal_is_one_usage_line(capsys, monkeypatch, output):
    """``convert W -o -`` typed at a terminal would print megabytes of binary: refused first."""
    from squeezenet.cli import common
    from squeezenet.cli.main import main

    monkeypatch.setattr(common, "_is_stdout", lambda path: str(path) == "/dev/stdout")
    monkeypatch.setattr(common.sys.stdout, "isatty", lambda: True)
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "weights.net", "-o", output])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.strip() == (
        "squeezenet convert: error: argument --output/-o: standard output is a terminal; "
        "redirect it (> FILE or | ...) or name a file (see --help)"
    )


def test_compress_help_names_each_default_from_the_code():
    """Every valued option of ``squeezenet compress`` says what it does unasked, and its choices and
    defaults are those of ``compression.choices``, which the library reads too."""
    from squeezenet.compression import choices

    options = {a.dest: a for a in _subcommands()["compress"]._actions if a.option_strings and a.nargs != 0}
    unnamed = [
        dest for dest, a in options.items() if dest not in ("weights", "output", "report") and "default" not in a.help
    ]
    assert unnamed == []  # --weights and --output are required, --report is written only when named
    assert options["method"].choices == choices.METHODS and options["method"].default == choices.DEFAULT_METHOD
    assert f"(default: {choices.DEFAULT_METHOD})" in options["method"].help
    assert options["coder"].choices == choices.CODERS and options["positions"].choices == choices.POSITION_SCHEMES
    assert f"default: {choices.DEFAULT_BITS} for all layers" in options["bits"].help
    assert f"{choices.SYNTHETIC_IMAGES} synthetic images" in options["data"].help
    assert f"{choices.HOLDOUT * 100:.0f} % of them" in options["data"].help % {}  # argparse %-formats help
