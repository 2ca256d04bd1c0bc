"""Inputs at the edges of what each command accepts (huge or tiny numbers, empty
lists, odd dataset encodings): each is one line on stderr and exit code 2, or a
correct result; never an internal error, a run that never ends, or a changed file."""

import pytest

from stance_studio.cli import main


def one_error_line(capsys, code):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("stance-studio: ")]
    assert code == 2, err
    assert "Traceback" not in err and "This is a bug" not in err
    assert len(lines) == 1, err
    return lines[0]


TRAIN = ["train", "curious-uncertainty", "--name", "b", "--keep", "rank:2"]


@pytest.mark.parametrize("argv,needle", [
    ([*TRAIN, "--seed", "99999999999999999999"], "seed must be a whole number from -2^63 to 2^64-1 (got 99999999999999999999)"),
    ([*TRAIN, "--steps", "99999999999999999999"], "steps must be at most 1,000,000 (got 99999999999999999999)"),
    # options another method reads were ignored in silence
    (["train", "curious-uncertainty", "--name", "b", "--method", "steer", "--rank", "4", "--keep", "top:2"],
     "--rank, --keep do not apply to --method steer"),
    (["train", "curious-uncertainty", "--name", "b", "--method", "steer", "--steps", "3"],
     "--steps does not apply to --method steer"),
    ([*TRAIN, "--strength", "2"], "--strength applies to --method steer only"),
    ([*TRAIN, "--modules", "q_proj"], "--modules applies to --method selective and lora; --method full trains every"),
    ([*TRAIN, "--method", "selective", "--rank", "4"], "--rank is the LoRA rank and applies to --method lora only"),
    (["compare-policies", "curious-uncertainty", "--rank", "4"], "--rank is the LoRA rank"),
    # a seed count that never ends, a last seed torch cannot take, steps 0 that meant the default
    (["compare-methods", "curious-uncertainty", "--seeds", "99999999999"], "--seeds must be from 1 to 100"),
    (["compare-policies", "curious-uncertainty", "--seeds", "1000000000"], "--seeds must be from 1 to 100"),
    (["compare-methods", "curious-uncertainty", "--seeds", "0"], "--seeds must be from 1 to 100 (got 0)"),
    (["compare-methods", "curious-uncertainty", "--seed", "18446744073709551615", "--seeds", "2"],
     "The last seed (--seed 18446744073709551615 + --seeds 2 - 1) must be a whole number from -2^63 to 2^64-1 "
     "(got 18446744073709551616)"),
    (["compare-methods", "curious-uncertainty", "--steps", "0"], "steps must be at least 1 (got 0)"),
    (["bench", "--only", "library_scan", "--repeats", "99999999999"], "--repeats must be at most 1000"),
    # an empty --modules meant the method's default modules; ',,' was already refused
    ([*TRAIN, "--method", "selective", "--modules", ""], "No module patterns given"),
])
def test_bad_options_are_one_line_and_exit_code_2(lib, capsys, monkeypatch, argv, needle):
    from stance_studio.cli import training_cmds

    if argv[0].startswith("compare"):  # refused before the model loads, so before any run
        monkeypatch.setattr(training_cmds, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    before = sorted(p.name for p in lib.iterdir())
    code = main([*argv, "--model", "tiny", "--library", str(lib)])
    assert needle in one_error_line(capsys, code)
    assert sorted(p.name for p in lib.iterdir()) == before


@pytest.mark.parametrize("command", [["export-peft", "a"], ["export-model", "a"], ["export-gguf", "a"]])
@pytest.mark.parametrize("where", ["", "library", "library/x.stance.safetensors"])
def test_an_export_into_the_library_or_to_an_empty_path_is_refused(lib, tmp_path, capsys, monkeypatch, command, where):
    monkeypatch.chdir(tmp_path)
    target = "" if not where else str(lib / where.removeprefix("library").lstrip("/"))
    before = sorted(p.name for p in lib.iterdir())
    code = main([*command, target, "--model", "tiny", "--library", str(lib)])
    expected = {"": "is empty", "library": "is the stance library"}.get(where, "is inside the stance library")
    assert expected in one_error_line(capsys, code)
    assert sorted(p.name for p in lib.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]  # nothing written in the current folder


@pytest.mark.parametrize("out,needle", [("", "is empty"), ("{lib}", "is the stance library"),
                                        ("{file}", "is a file; choose a folder for the shipped set")])
def test_rebuild_builtins_refuses_an_empty_out_the_library_or_a_file(lib, tmp_path, capsys, monkeypatch, out, needle):
    """--out '' meant the shipped folder inside the installed app, whose set it replaced."""
    from stance_studio.cli import shipped_cmds
    from stance_studio.core.shipped import default_folder

    monkeypatch.setattr(shipped_cmds, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "file").write_text("x")
    shipped_before = {p.name: p.stat().st_mtime_ns for p in default_folder().iterdir()}
    code = main(["rebuild-builtins", "--out", out.format(lib=lib, file=tmp_path / "file"), "--model", "tiny",
                 "--library", str(lib)])
    assert needle in one_error_line(capsys, code)
    assert {p.name: p.stat().st_mtime_ns for p in default_folder().iterdir()} == shipped_before


@pytest.mark.parametrize("command", [["list"], ["generate", "--prompt", "hi", "--variant", "base"]])
def test_an_empty_model_is_refused_not_read_as_the_bundled_one(lib, capsys, monkeypatch, command):
    """--model "$UNSET" loaded the bundled model in silence (minutes, and another model)."""
    from stance_studio.cli import common

    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code = main([*command, "--model", "", "--library", str(lib)])
    assert "The model is empty (--model '')" in one_error_line(capsys, code)
