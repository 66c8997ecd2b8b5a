"""The ``napari-sam`` command: argument handling and subcommand dispatch (napari not started)."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

import pytest

from napari_sam import cli

main_module = importlib.import_module("napari_sam.cli.main")  # `napari_sam.cli.main` is the function


@pytest.fixture()
def launched(monkeypatch):
    calls = []
    monkeypatch.setattr("napari_sam.widgets.launch.launch",
                        lambda image, model=None, device="auto": calls.append((image, model, device)) or 0)
    return calls


def test_console_script_is_declared():
    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "napari-sam"]
    assert ep.value == "napari_sam.cli:main"


def test_no_argument_opens_the_sample(launched):
    assert cli.main([]) == 0
    assert launched == [(None, None, "auto")]


def test_image_model_and_device(launched):
    assert cli.main(["cells.tif", "--model", "vit_l", "--device", "cpu"]) == 0
    assert launched == [("cells.tif", "vit_l", "cpu")]


def test_help_lists_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    assert "napari-sam" in capsys.readouterr().out


def test_subcommands_are_dispatched_with_their_arguments(monkeypatch, launched):
    seen = []
    monkeypatch.setitem(main_module.SUBCOMMANDS, "fake", lambda argv: seen.append(argv) or 3)
    assert cli.main(["fake", "in.tif", "--out", "x"]) == 3
    assert seen == [["in.tif", "--out", "x"]] and not launched


def test_the_real_subcommands_are_registered():
    from napari_sam.cli import embed, segment

    assert main_module.SUBCOMMANDS == {"segment": segment.main, "embed": embed.main}


def test_missing_image_file_is_a_message_not_a_traceback(tmp_path, capsys):
    from napari_sam.widgets.launch import launch

    assert launch(str(tmp_path / "nope.tif")) == 2
    assert "no such file" in capsys.readouterr().out
