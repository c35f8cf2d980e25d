"""The registry's contract: names, errors that help, validation before construction, plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import yaml

from kospeech.errors import RegistryError
from kospeech.registry import PLUGIN_ERRORS, REGISTRIES, build, component, load_user_dir, register, registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_registry():
    """Restore every registry after a test that registers throwaway names."""
    registry("loss").names()  # load the built-ins before taking the snapshot
    saved = {kind: dict(reg._entries) for kind, reg in REGISTRIES.items()}
    yield
    for kind, reg in REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(saved[kind])


def _define_toy_components():
    @register("attention", "location_aware_toy")
    class Toy:
        """A toy attention used to test the registry."""

        def __init__(self, *, num_heads: int = 4, dim: int, mode: Literal["a", "b"] = "a", scale: float = 1.0):
            self.num_heads, self.dim, self.mode, self.scale = num_heads, dim, mode, scale

    @register("decoder", "toy_decoder")
    class ToyDecoder:
        def __init__(
            self, *, hidden: int = 8, attention: component("attention", "dim") = {"name": "location_aware_toy"}
        ):
            self.attention = build("attention", attention, path="decoder.attention", dim=hidden)

    return Toy, ToyDecoder


def test_build_passes_arguments_and_provided_values(clean_registry):
    Toy, ToyDecoder = _define_toy_components()
    cfg = {"name": "toy_decoder", "hidden": 16, "attention": {"name": "location_aware_toy", "num_heads": 2}}
    dec = build("decoder", cfg)
    assert isinstance(dec.attention, Toy)
    assert (dec.attention.num_heads, dec.attention.dim) == (2, 16)


def test_unknown_name_suggests_the_closest(clean_registry):
    _define_toy_components()
    with pytest.raises(RegistryError) as err:
        build("attention", {"name": "locaton_aware_toy", "dim": 3}, path="model.decoder.attention")
    msg = str(err.value)
    assert "unknown attention 'locaton_aware_toy'" in msg
    assert "Did you mean 'location_aware_toy'?" in msg
    assert "model.decoder.attention" in msg
    assert "location_aware_toy" in msg.split("Registered attentions:")[1]


def test_unknown_argument_names_component_argument_and_key_path(clean_registry):
    _define_toy_components()
    cfg = {"name": "toy_decoder", "attention": {"name": "location_aware_toy", "num_head": 2}}
    with pytest.raises(RegistryError) as err:
        build("decoder", cfg, path="model.decoder")
    msg = str(err.value)
    assert "unknown argument 'num_head'" in msg
    assert "attention 'location_aware_toy'" in msg
    assert "'model.decoder.attention.num_head'" in msg
    assert "Did you mean 'num_heads'?" in msg


def test_nested_errors_come_before_any_construction(clean_registry):
    built = []

    @register("encoder", "records_construction")
    class Outer:
        def __init__(self, *, sub: component("attention", "dim")):
            built.append(self)

    @register("attention", "needs_width")
    class Inner:
        def __init__(self, *, dim: int, width: int):
            pass

    with pytest.raises(RegistryError, match=r"missing required argument\(s\): 'model.encoder.sub.width'"):
        build("encoder", {"name": "records_construction", "sub": {"name": "needs_width"}}, path="model.encoder")
    assert built == []  # the outer constructor never ran


def test_missing_argument_is_named_with_its_path(clean_registry):
    _define_toy_components()
    with pytest.raises(RegistryError) as err:
        build("attention", {"name": "location_aware_toy"}, path="model.att")
    assert "missing required argument(s): 'model.att.dim'" in str(err.value)


def test_provided_argument_must_not_be_configured(clean_registry):
    _define_toy_components()
    cfg = {"name": "toy_decoder", "attention": {"name": "location_aware_toy", "dim": 4}}
    with pytest.raises(RegistryError, match="gets 'dim' from its parent component"):
        build("decoder", cfg, path="model.decoder")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("num_heads", "4", "does not match the type int"),
        ("num_heads", 2.5, "does not match the type int"),
        ("num_heads", True, "does not match the type int"),
        ("mode", "c", "does not match the type Literal"),
        ("scale", "fast", "does not match the type float"),
    ],
)
def test_yaml_values_are_checked_against_type_hints(clean_registry, key, value, expected):
    _define_toy_components()
    with pytest.raises(RegistryError) as err:
        build("attention", {"name": "location_aware_toy", "dim": 2, key: value}, path="att")
    assert expected in str(err.value)
    assert f"'att.{key}'" in str(err.value)


def test_int_is_accepted_where_float_is_expected(clean_registry):
    Toy, _ = _define_toy_components()
    obj = build("attention", yaml.safe_load("{name: location_aware_toy, dim: 2, scale: 3}"))
    assert obj.scale == 3


def test_duplicate_name_is_an_error_unless_overridden(clean_registry):
    _define_toy_components()
    with pytest.raises(RegistryError, match="already registered.*override=True"):

        @register("attention", "location_aware_toy")
        class Again:
            pass

    @register("attention", "location_aware_toy", override=True)
    class Replacement:
        def __init__(self, *, dim: int):
            self.dim = dim

    assert isinstance(build("attention", {"name": "location_aware_toy", "dim": 1}), Replacement)


def test_unknown_kind_and_missing_name():
    with pytest.raises(RegistryError, match="Did you mean 'attention'"):
        registry("atention")
    with pytest.raises(RegistryError, match="has no 'name'"):
        build("loss", {"label_smoothing": 0.1}, path="model.loss")


def test_builtin_loss_builds_from_yaml():
    loss = build("loss", yaml.safe_load("name: cross_entropy\nlabel_smoothing: 0.1"))
    assert loss.label_smoothing == 0.1


def test_old_option_spellings_build_and_warn_with_their_key_path():
    """``heads`` and ``out_dim`` still build for a while: renamed once, with the key path."""
    import torch

    from kospeech.nn.attention import Attention, attention_output_dim

    cfg = yaml.safe_load(
        "name: conformer\nencoder: {name: conformer, num_layers: 2, d_model: 32, ff_dim: 64,"
        " attention: {name: relative_multi_head, heads: 2}}\ndecoder: {name: transformer,"
        " d_model: 32, heads: 2, ff_dim: 64, num_layers: 1}"
    )
    with pytest.warns(FutureWarning) as record:
        model = build("model", cfg, path="model", input_dim=40, vocab_size=20)
    messages = sorted({str(w.message) for w in record})
    assert messages == [
        "model.decoder.heads is deprecated; write num_heads",
        "model.encoder.attention.heads is deprecated; write num_heads",
    ]
    assert model.encoder.layers[1].attn.num_heads == 2 and model.attention.decoder.layers[0].self_attn.num_heads == 2
    new = build("model", yaml.safe_load(yaml.safe_dump(cfg).replace("heads:", "num_heads:")),
                path="model", input_dim=40, vocab_size=20)
    assert sum(p.numel() for p in new.parameters()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(RegistryError, match="sets both 'heads' and 'num_heads'"):
        build("attention", {"name": "relative_multi_head", "heads": 2, "num_heads": 2}, query_dim=8, key_dim=8)

    class OldPlugin(Attention):  # a plugin written against the old contract
        def __init__(self) -> None:
            super().__init__()
            self.out_dim = 7

    with pytest.warns(FutureWarning, match="OldPlugin.out_dim is deprecated; write output_dim"):
        att = OldPlugin()
    assert att.output_dim == 7 and attention_output_dim(att) == 7
    bare = torch.nn.Module()
    bare.out_dim = 5
    with pytest.warns(FutureWarning, match="Module.out_dim is deprecated; write output_dim"):
        assert attention_output_dim(bare) == 5


PLUGIN_SOURCE = textwrap.dedent(
    '''
    from kospeech.registry import register


    @register("attention", "{name}")
    class PluginAttention:
        """An attention that lives outside the repository."""

        def __init__(self, *, query_dim: int = 4, temperature: float = 1.0):
            self.temperature = temperature
    '''
)


def test_user_dir_of_files_registers_and_builds(tmp_path, clean_registry):
    (tmp_path / "my_attention.py").write_text(PLUGIN_SOURCE.format(name="userdir_attention"))
    load_user_dir(tmp_path)
    obj = build("attention", yaml.safe_load("{name: userdir_attention, temperature: 0.5}"))
    assert obj.temperature == 0.5


def test_user_dir_package_registers(tmp_path, clean_registry):
    pkg = tmp_path / "my_plugins_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLUGIN_SOURCE.format(name="userpkg_attention"))
    load_user_dir(pkg)
    assert "userpkg_attention" in registry("attention").names()


def test_broken_plugin_is_reported_and_builtins_survive(tmp_path, clean_registry, caplog):
    (tmp_path / "broken_plugin.py").write_text("import kospeech\nraise RuntimeError('plugin exploded')\n")
    (tmp_path / "fine_plugin.py").write_text(PLUGIN_SOURCE.format(name="survivor_attention"))
    load_user_dir(tmp_path)
    label = next(k for k in PLUGIN_ERRORS if "broken_plugin.py" in k)
    assert "RuntimeError: plugin exploded" in PLUGIN_ERRORS[label]
    assert "broken_plugin.py" in caplog.text
    assert "survivor_attention" in registry("attention").names()
    assert "cross_entropy" in registry("loss").names()


def _run_cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "kospeech", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def test_cli_lists_user_dir_plugin(tmp_path):
    (tmp_path / "my_attention.py").write_text(PLUGIN_SOURCE.format(name="cli_userdir_attention"))
    out = _run_cli(["registry", "list", "attention", "--user-dir", str(tmp_path)], {})
    assert out.returncode == 0, out.stderr
    assert "cli_userdir_attention" in out.stdout
    assert "temperature=1.0" in out.stdout


def test_env_user_dir_and_show(tmp_path):
    (tmp_path / "my_attention.py").write_text(PLUGIN_SOURCE.format(name="env_attention"))
    out = _run_cli(["registry", "show", "attention", "env_attention"], {"KOSPEECH_USER_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "An attention that lives outside the repository." in out.stdout


def test_entry_point_plugin_is_discovered(tmp_path):
    site = tmp_path / "site"
    pkg = site / "ep_plugin_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_SOURCE.format(name="entry_point_attention"))
    dist = site / "ep_plugin_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kospeech.plugins]\nep_plugin = ep_plugin_pkg\n")
    out = _run_cli(["registry", "list", "attention"], {"PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    assert "entry_point_attention" in out.stdout
    assert "ep_plugin_pkg.PluginAttention" in out.stdout


def test_failing_entry_point_is_reported_by_name(tmp_path):
    site = tmp_path / "site"
    (site / "bad_ep_pkg").mkdir(parents=True)
    (site / "bad_ep_pkg" / "__init__.py").write_text("raise ImportError('missing dependency xyz')\n")
    dist = site / "bad_ep_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-ep-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kospeech.plugins]\nbad_ep = bad_ep_pkg\n")
    out = _run_cli(["registry", "list", "loss"], {"PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    assert "cross_entropy" in out.stdout  # built-ins still listed
    assert "entry point 'bad_ep'" in out.stdout + out.stderr
    assert "missing dependency xyz" in out.stdout + out.stderr


def test_cli_unknown_name_is_a_clean_error():
    out = _run_cli(["registry", "show", "loss", "cross_entropi"], {})
    assert out.returncode == 1
    assert "Did you mean 'cross_entropy'?" in out.stderr
    assert "Traceback" not in out.stderr
