"""Every user-facing failure on the command line is one line on stderr and exit code
2; a bug is one line saying so and exit code 1; never a traceback."""

import errno
import json

import pytest

from stance_studio.cli import main
from stance_studio.core.library import Library


def one_error_line(capsys, code, expected=2):
    err = capsys.readouterr().err
    # progress lines ([  1 s] stage …) may precede it on a non-terminal stderr
    lines = [line for line in err.splitlines() if line.startswith("stance-studio: ")]
    assert code == expected, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def files(tmp_path, **contents):
    out = {}
    for name, data in contents.items():
        path = tmp_path / name
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        out[name] = str(path)
    return out


@pytest.mark.parametrize("argv,needle", [
    (["train", "{bad}", "--name", "b"], "not UTF-8"),
    (["train", "{deep}", "--name", "b"], "nested too deeply"),
    (["train", "{surrogate}", "--name", "b"], "not valid Unicode"),
    (["train", "{folder}", "--name", "b"], "is a folder, not a file"),
    (["evaluate", "a", "--prompts", "{bad}"], "not UTF-8"),
    (["train", "curious-uncertainty", "--name", "base"], "reserved"),
    (["generate", "--prompt", "hi", "--variant", "a=1e308"], "finite numbers from -100 to 100"),
    (["generate", "--prompt", "hi", "--variant", "a=1e309"], "finite numbers from -100 to 100"),
    (["generate", "--prompt", "hi", "--sample", "--temperature", "0"], "temperature must be above 0"),
    (["generate", "--prompt", "hi", "--sample", "--temperature", "-1"], "temperature must be above 0"),
    (["generate", "--prompt", "hi\udcff", "--variant", "base"], "not valid Unicode"),
    (["inspect", "{bad}"], "not a readable safetensors file"),
    (["inspect", "nothere"], "No checkpoint named 'nothere'"),
    (["inspect", "./missing"], "does not exist"),
    (["export-peft", "a", "{bad}"], "is a file"),
    (["inspect", "a", "--top", "-1"], "--top must be 0 or more"),
    (["bench", "--repeats", "0"], "--repeats must be at least 1"),
    (["generate", "--prompt", "word " * 1000, "--variant", "base"], "more than the model's context of 512 tokens"),
    (["inspect", "{folder}/"], "is a folder"),
])
def test_bad_input_is_one_line_and_exit_code_2(lib, tmp_path, capsys, argv, needle):
    paths = files(tmp_path, bad=b"\xff\xfe not text", deep="[" * 100_000 + "\n",
                  surrogate='{"prompt": "\\udc80", "response": "x"}\n')
    paths["folder"] = str(tmp_path)
    argv = [a.format(**paths) if a.startswith("{") else a for a in argv]
    code = main([*argv, "--model", "tiny", "--library", str(lib)])
    assert needle in one_error_line(capsys, code)


@pytest.mark.parametrize("command", [["list"], ["train", "curious-uncertainty", "--name", "b"]])
def test_a_library_path_that_is_a_file_is_one_line(tmp_path, capsys, command):
    target = tmp_path / "lib"
    target.write_text("x")
    code = main([*command, "--model", "tiny", "--library", str(target)])
    assert "is a file, not a folder" in one_error_line(capsys, code)


def test_a_read_only_library_fails_before_the_model_loads(lib, capsys, monkeypatch):
    from stance_studio.cli import common
    from stance_studio.core import storage

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    loaded = []
    monkeypatch.setattr(storage.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(common, "load_model", lambda *a, **k: loaded.append(1))
    code = main(["train", "curious-uncertainty", "--name", "b", "--model", "tiny", "--library", str(lib)])
    assert "read-only" in one_error_line(capsys, code) and loaded == []


def test_a_full_disk_during_the_save_is_one_line(lib, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("stance_studio.core.checkpoints.save_file", full)
    code = main(["train", "curious-uncertainty", "--name", "b", "--steps", "1", "--keep", "rank:2",
                 "--model", "tiny", "--library", str(lib)])
    assert "disk is full" in one_error_line(capsys, code)
    assert sorted(p.name for p in lib.iterdir()) == ["a.stance.safetensors"]


@pytest.mark.parametrize("exc,code,needle", [
    (OSError(errno.EACCES, "Permission denied", "/x/y"), 2, "Cannot use /x/y: permission denied"),
    (MemoryError(), 2, "ran out of memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"), 2, "ran out of memory"),
    (RecursionError("maximum recursion depth exceeded"), 2, "nested too deeply"),
    (KeyError("oops"), 1, "This is a bug in Stance Studio"),
])
def test_unexpected_failures_are_one_line(lib, capsys, monkeypatch, exc, code, needle):
    def boom(args):
        raise exc

    monkeypatch.setattr(Library, "scan", lambda self: boom(None))
    result = main(["list", "--library", str(lib)])
    assert needle in one_error_line(capsys, result, expected=code)


def test_a_bug_shows_its_traceback_when_debugging(lib, capsys, monkeypatch):
    monkeypatch.setenv("STANCE_STUDIO_DEBUG", "1")
    monkeypatch.setattr(Library, "scan", lambda self: {}["missing"])
    assert main(["list", "--library", str(lib)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error" in err.splitlines()[-1]


def test_export_peft_into_an_adapter_folder_keeps_other_files(lib, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert main(["export-peft", "a", str(out), "--library", str(lib)]) == 0
    (out / "README.md").write_text("mine")
    capsys.readouterr()
    assert main(["export-peft", "a", str(out), "--library", str(lib), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapter"] == str(out)
    assert (out / "README.md").read_text() == "mine"


@pytest.mark.parametrize("command", [["list"], ["list", "--json"], ["interference", "a", "a"], ["inspect", "a"],
                                     ["generate", "--prompt", "hi"]])
@pytest.mark.parametrize("spec", ["tiny:nosuch", "tiny:llama:nosuch", "tiny:layers=0"])
def test_an_unknown_tiny_model_is_one_line_and_exit_code_2(lib, capsys, command, spec):
    """A tiny spec that names no family is refused by every command, even one that
    loads no model, before any work; the line names the spec and the families."""
    code = main([*command, "--model", spec, "--library", str(lib)])
    line = one_error_line(capsys, code)
    assert spec in line and "gpt2" in line
    assert capsys.readouterr().out == ""
