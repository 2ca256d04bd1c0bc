import json

from stance_studio.cli import main
from stance_studio.core.checkpoints import make_checkpoint
from stance_studio.core.library import Library
from stance_studio.core.tiny import tiny_base


def test_columns_are_labelled_with_the_spec_as_typed(library_path, deltas_factory, capsys):
    base = tiny_base()
    Library(library_path).save(make_checkpoint("cu", deltas_factory(base, scale=0.5), base))
    specs = ["base", "cu", "cu=0.5", "cu = -1"]
    argv = ["generate", "--prompt", "hello there", "--max-new-tokens", "4", "--model", "tiny",
            "--library", str(library_path), "--json"]
    for spec in specs:
        argv += ["--variant", spec]
    assert main(argv) == 0
    columns = json.loads(capsys.readouterr().out)["columns"]
    assert [c["variant"] for c in columns] == specs
    # with no --variant: base, then every compatible stance under its own name
    assert main(argv[: argv.index("--variant")]) == 0
    assert [c["variant"] for c in json.loads(capsys.readouterr().out)["columns"]] == ["base", "cu"]
