"""The layout of an export directory, shared by the writer (torch side) and the runtime (torch-free).

::

    DIR/model.yaml          the manifest: the metadata block (kind ``export``), the network's
                            inputs/outputs, frame timing, the frontend config, the default search
    DIR/model.onnx          CTC models: encoder + CTC head: features (B, T, D), feature_lengths
                            (B,) -> log_probs (B, T', V), lengths (B,); batch and time axes dynamic
    DIR/encoder.onnx        transducers instead: features, feature_lengths -> encoder_out
                            (B, T', H), lengths; predictor.onnx: tokens (N,), state_0.. ->
                            predictor_out (N, P), next_state_0..; joiner.onnx: encoder_frame
                            (N, H), predictor_out (N, P) -> log_probs (N, V)
    DIR/decoder.onnx        models with an attention decoder: one step, tokens (N,), encoder_out
                            (N, T', H), encoder_lengths (N,), state_0.. -> log_probs (N, V),
                            next_state_0.. (the state pytree flattened, dict keys sorted; the
                            manifest's ``network.decoder_state`` gives per-row shapes of the zero
                            start state). CTC+attention models: model.onnx also returns
                            encoder_out; attention-only models: encoder.onnx as transducers
    DIR/*.int8.onnx         the same with int8 dynamic quantisation (``--quantize int8``)
    DIR/frontend.npz        the frontend's arrays (window, mel filters, DCT) as the checkpoint's
                            frontend computed them, so the runtime's numpy features match exactly
    DIR/cmvn.npz            global CMVN (mean, std), absent when the model was trained without it
    DIR/tokenizer/          the lang dir (``tokenizer.yaml`` + ``units.txt`` or ``spm.model``)

This module imports neither torch nor the registry.
"""

from __future__ import annotations

MANIFEST = "model.yaml"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TRANSDUCER_FILES = {"onnx": "encoder.onnx", "predictor": "predictor.onnx", "joiner": "joiner.onnx"}
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
FRONTEND_ARRAYS = "frontend.npz"
CMVN_FILE = "cmvn.npz"
TOKENIZER_DIR = "tokenizer"
INPUTS = ("features", "feature_lengths")
#: the searches the runtime decodes an export with, per network head (export picks among them too)
RUNTIME_SEARCHES = {"ctc": ("ctc_greedy", "ctc_prefix_beam"), "transducer": ("transducer_greedy",),
                    "attention": ("greedy",)}
OUTPUTS = ("log_probs", "lengths")
