"""A third-party attention, loaded from a folder, drives LAS after a one-line YAML change."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import kospeech.nn
from kospeech.cli import main
from kospeech.registry import REGISTRIES, build, load_user_dir, registry
from tests import test_trainer

corpus = test_trainer.corpus  # the session fixture: one espeak-ng corpus for the training files

# A real attention written the way an outside user would: monotonic Gaussian windows (Graves
# 2013) whose centre moves forward by a learned, positive step per decoder step, over the raw
# encoder outputs (no key/value projections).
PLUGIN = textwrap.dedent(
    '''
    import torch
    import torch.nn.functional as F
    from torch import nn

    import kospeech.nn
    from kospeech.registry import register


    @register("attention", "gaussian")
    class GaussianAttention(kospeech.nn.Attention):
        """Monotonic Gaussian-window attention; the state is each head's window centre."""

        stepwise = True

        def __init__(self, *, query_dim: int, key_dim: int, num_heads: int = 1, min_width: float = 0.5) -> None:
            super().__init__()
            self.num_heads = num_heads
            self.output_dim = key_dim
            self.min_width = min_width
            self.window = nn.Linear(query_dim, 2 * num_heads)

        def forward(self, query, keys, values, mask, state=None):
            b, lq, _ = query.shape
            centre = query.new_zeros(b, self.num_heads) if state is None else state
            frames = torch.arange(keys.size(1), device=keys.device, dtype=query.dtype)
            contexts, weights = [], []
            for i in range(lq):
                step, width = F.softplus(self.window(query[:, i])).chunk(2, dim=-1)
                centre = centre + step
                z = (frames[None, None, :] - centre[..., None]) / (width[..., None] + self.min_width)
                w = kospeech.nn.masked_softmax(-0.5 * z * z, mask[:, None, :])
                weights.append(w)
                contexts.append(torch.einsum("bht,btd->bd", w, values) / self.num_heads)
            return torch.stack(contexts, 1), torch.stack(weights, 2), centre
    '''
)

LAS_YAML = """
name: las
init: default
label_smoothing: 0.0
encoder:
  name: rnn
  hidden_dim: 32
  num_layers: 1
  dropout: 0.0
  extractor: {name: conv2d_subsampling, output_dim: 32, channels: 8}
decoder:
  name: rnn
  hidden_dim: 32
  num_layers: 1
  dropout: 0.0
  attention:
    name: scaled_dot
    num_heads: 2
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the plugin file, loaded once; the registry is restored afterwards."""
    registry("attention").names()  # built-ins first, so the snapshot has them
    saved = {kind: dict(reg._entries) for kind, reg in REGISTRIES.items()}
    folder = tmp_path_factory.mktemp("my_plugins")
    (folder / "gaussian_attention.py").write_text(PLUGIN)
    load_user_dir(folder)
    yield folder
    for kind, reg in REGISTRIES.items():
        reg._entries.clear()
        reg._entries.update(saved[kind])


def test_plugin_attention_replaces_scaled_dot_in_las_and_trains(plugin_dir: Path, fbank_batch: dict) -> None:
    assert "gaussian" in registry("attention").names()
    lines = LAS_YAML.splitlines()
    swapped = [line.replace("name: scaled_dot", "name: gaussian") for line in lines]
    assert sum(a != b for a, b in zip(lines, swapped)) == 1  # exactly one line changed
    model = build("model", yaml.safe_load("\n".join(swapped)), input_dim=80, vocab_size=fbank_batch["vocab_size"])
    att = model.speller.attention
    assert type(att).__name__ == "GaussianAttention" and isinstance(att, kospeech.nn.Attention)
    assert model.speller.fc1.in_features == 32 + 64  # sized from the plugin's output_dim (the listener size)

    batch = (
        fbank_batch["features"],
        fbank_batch["feature_lengths"],
        fbank_batch["targets"],
        fbank_batch["target_lengths"],
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(8):
        loss = model(*batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert att.window.weight.grad is not None and att.window.weight.grad.abs().sum() > 0
    # from ln(V) = 3.8 the loss must fall steadily: the last step well under the first
    assert losses[-1] < 0.8 * losses[0], losses
    assert losses[-1] < min(losses[:3]), losses

    # and it decodes through the model's step hook, carrying its state (the window centres)
    model.eval()
    with torch.no_grad():
        enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        state = model.init_decoder_state(enc, enc_len)
        _, state = model.decoder_step(torch.full((8,), 2), state, enc, enc_len)
        _, state2 = model.decoder_step(torch.full((8,), 5), state, enc, enc_len)
    assert state["attention"].shape == (8, 2) and torch.all(state2["attention"] > state["attention"])


def test_registry_cli_lists_the_plugin_attention(plugin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "list", "attention", "--user-dir", str(plugin_dir)]) == 0
    out = capsys.readouterr().out
    assert "[attention]" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("gaussian "))
    assert "GaussianAttention" in line
    assert "num_heads=1, min_width=0.5" in out
    for builtin in ("scaled_dot", "location_aware", "additive"):
        assert builtin in out


def test_checkpoint_records_the_plugin_and_decoding_asks_for_it(
    plugin_dir: Path, corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A model trained with the plugin records it; decoding it where the plugin is not loaded
    names the component, the module and the exact --user-dir, and imports the recorded folder
    only with --trust-plugins."""
    from kospeech.registry import plugins
    from kospeech.train.checkpoint import load_checkpoint
    cfg = test_trainer.base_config(corpus, max_epochs=1)
    cfg["model"] = yaml.safe_load(LAS_YAML.replace("name: scaled_dot", "name: gaussian"))
    cfg["model"]["decoder"]["attention"].pop("num_heads")
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    exp = tmp_path / "exp"
    assert main(["train", "--config", str(tmp_path / "conf.yaml"), "--exp-dir", str(exp),
                 "--user-dir", str(plugin_dir)]) == 0
    ckpt = exp / "checkpoints" / "last.pt"
    records = load_checkpoint(ckpt)["metadata"]["plugins"]
    module = registry("attention").get("gaussian").module
    assert records == [{"kind": "attention", "name": "gaussian", "module": module,
                        "user_dir": str(plugin_dir.resolve())}]

    def forget_the_plugin() -> None:  # as in a fresh process that was not given --user-dir
        monkeypatch.delitem(REGISTRIES["attention"]._entries, "gaussian")
        monkeypatch.setattr(plugins, "_loaded_user_dirs", set())

    decode = ["decode", "--checkpoint", str(ckpt), "--data", str(corpus["dev"]), "--device", "cpu",
              "--search", "greedy", "max_len_ratio=0.5"]
    forget_the_plugin()
    assert main([*decode, "--out", str(tmp_path / "d0")]) == 1
    err = capsys.readouterr().err
    assert f"the model's attention 'gaussian' comes from the plugin module {module}" in err
    assert f"pass --user-dir {plugin_dir.resolve()}" in err and "--trust-plugins" in err
    assert "gaussian" not in registry("attention").names()  # nothing was imported
    assert main([*decode, "--out", str(tmp_path / "d1"), "--trust-plugins"]) == 0
    assert "gaussian" in registry("attention").names()
    monkeypatch.undo()
    forget_the_plugin()
    assert main([*decode, "--out", str(tmp_path / "d2"), "--user-dir", str(plugin_dir)]) == 0
    assert (tmp_path / "d2" / "hyp.trn").read_text(encoding="utf-8") == (tmp_path / "d1" / "hyp.trn").read_text(
        encoding="utf-8")

    # a checkpoint from before the record still gets the hint
    old = load_checkpoint(ckpt)
    del old["metadata"]["plugins"]
    torch.save(old, tmp_path / "old.pt")
    monkeypatch.undo()
    forget_the_plugin()
    capsys.readouterr()
    decode[2] = str(tmp_path / "old.pt")
    assert main([*decode, "--out", str(tmp_path / "d3")]) == 1
    err = capsys.readouterr().err
    assert "unknown attention 'gaussian'" in err and "does not record its plugin modules" in err
    assert "pass --user-dir PATH" in err
