"""Config files: inheritance, overrides, errors that name the file and line, the CLI."""

from __future__ import annotations

import pytest

from kospeech.cli import build_parser, main
from kospeech.config import apply_overrides, load_config, save_config
from kospeech.errors import ConfigError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_extends_merges_deeply_and_child_wins(tmp_path):
    write(tmp_path / "base.yaml", "model:\n  name: las\n  encoder: {hidden: 256, layers: 3}\ntrain: {max_epochs: 10}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmodel:\n  encoder: {hidden: 512}\n")
    cfg = load_config(child)
    assert cfg == {"model": {"name": "las", "encoder": {"hidden": 512, "layers": 3}}, "train": {"max_epochs": 10}}


def test_extends_list_applies_in_order_and_replace_marker(tmp_path):
    write(tmp_path / "a.yaml", "x: 1\natt: {name: location_aware, conv_channels: 10}\n")
    write(tmp_path / "b.yaml", "x: 2\n")
    child = write(tmp_path / "c.yaml", "extends: [a.yaml, b.yaml]\natt: {_replace_: true, name: scaled_dot}\n")
    assert load_config(child) == {"x": 2, "att": {"name": "scaled_dot"}}


def test_extends_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="inheritance cycle"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.max_epochs=3", "max_epochs", 3),
        ("train.lr=1e-3", "lr", 0.001),
        ("train.amp=true", "amp", True),
        ("train.name=conformer", "name", "conformer"),
        ("train.sizes=[1, 2]", "sizes", [1, 2]),
        ("train.cmvn=null", "cmvn", None),
    ],
)
def test_overrides_are_typed_by_yaml_rules(override, key, expected):
    assert apply_overrides({"train": {}}, [override])["train"][key] == expected


def test_override_creates_missing_mappings_and_rejects_scalars():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}
    with pytest.raises(ConfigError, match="'a.b' is a int, not a mapping"):
        apply_overrides({"a": {"b": 1}}, ["a.b.c=2"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_overrides({}, ["train.max_epochs"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "model:\n  name: las\n  encoder: {hidden: 256\ntrain: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert f"{bad}:4:" in str(err.value) or f"{bad}:3:" in str(err.value)
    assert "YAML syntax error" in str(err.value)


def test_syntax_error_in_a_base_names_the_base(tmp_path):
    write(tmp_path / "base.yaml", "a: [1, 2\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\n")
    with pytest.raises(ConfigError, match="base.yaml:"):
        load_config(child)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))


def test_save_round_trips_korean_text(tmp_path):
    cfg = {"name": "한국어", "n": 1}
    path = save_config(cfg, tmp_path / "exp" / "config.yaml")
    assert load_config(path) == cfg
    assert "한국어" in path.read_text(encoding="utf-8")


def test_config_show_cli(tmp_path, capsys):
    write(tmp_path / "base.yaml", "train: {max_epochs: 10, lr: 0.1}\n")
    child = write(tmp_path / "c.yaml", "extends: base.yaml\ntrain: {lr: 0.2}\n")
    assert main(["config", "show", "--config", str(child), "train.max_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "max_epochs: 2" in out and "lr: 0.2" in out


def test_config_show_cli_reports_bad_yaml(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", "a: [1\n")
    assert main(["config", "show", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "YAML syntax error" in err


def test_help_lists_only_commands_that_exist():
    help_text = build_parser().format_help()
    assert "registry" in help_text and "config" in help_text
    from importlib.util import find_spec

    for name in ("transcribe", "compare", "train"):
        present = find_spec(f"kospeech.cli.{name}_cmd") is not None
        assert (name in help_text) == present


def test_amp_on_cpu_is_explicit_bf16_on_a_cpu_that_has_it(monkeypatch, caplog) -> None:
    """``auto`` keeps CPU training in float32 (a recipe's results must not move with the
    machine); ``bf16`` autocasts on a CPU with native bf16 and warns elsewhere."""
    import torch

    from kospeech.train import options

    cpu = torch.device("cpu")
    assert options.resolve_amp("auto", cpu) is None
    assert options.resolve_amp("none", cpu) is None
    monkeypatch.setattr(options, "cpu_has_bf16", lambda: True)
    assert options.resolve_amp("bf16", cpu) is torch.bfloat16
    assert options.resolve_amp("fp16", cpu) is None
    monkeypatch.setattr(options, "cpu_has_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        assert options.resolve_amp("bf16", cpu) is None
    assert "no native bf16" in caplog.text
