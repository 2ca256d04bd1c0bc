"""install-builtins and rebuild-builtins on the tiny model."""

import json

from stance_studio.cli import main


def test_rebuild_then_install_and_refusals(tmp_path, capsys):
    out_dir, lib = tmp_path / "shipped", tmp_path / "lib"
    code = main(["rebuild-builtins", "--model", "tiny", "--out", str(out_dir), "--stance", "curious-uncertainty",
                 "--steps", "1", "--keep", "rank:1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["model"] == "tiny" and [s["name"] for s in doc["stances"]] == ["curious-uncertainty"]
    assert (out_dir / "manifest.json").is_file()

    common = ["--from", str(out_dir), "--library", str(lib), "--json"]
    assert main(["install-builtins", "--model", "tiny", *common]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in doc["installed"]] == ["curious-uncertainty"] and doc["skipped"] == []
    assert (lib / "curious-uncertainty.stance.safetensors").is_file()
    assert main(["install-builtins", "--model", "tiny", *common]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == ["curious-uncertainty"]

    # another model: one line naming both, exit code 2
    code = main(["install-builtins", "--model", "tiny:5", *common])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "tiny:5" in err[0] and "Traceback" not in err[0]


def test_install_without_a_set_fails_before_loading(tmp_path, capsys, monkeypatch):
    from stance_studio.cli import shipped_cmds

    monkeypatch.setattr(shipped_cmds, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    code = main(["install-builtins", "--model", "tiny", "--from", str(tmp_path), "--library", str(tmp_path / "l")])
    err = capsys.readouterr().err
    assert code == 2 and "rebuild-builtins" in err and "Traceback" not in err
