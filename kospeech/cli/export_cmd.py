"""``kospeech export MODEL --format onnx --out DIR [--quantize int8]``: a model for use without PyTorch.

MODEL is a checkpoint or a package (``kospeech pack``; its LM, decoding and model card come
along, so the runtime decodes as the package does). DIR holds model.onnx (encoder + CTC head,
dynamic batch and time axes), the tokenizer, the frontend config and arrays, CMVN and model.yaml
(the manifest with the metadata block). DIR is replaced only when it is an earlier export (or
empty); a folder that holds anything else is refused, never deleted.
``kospeech.runtime.load(DIR)`` decodes it with onnxruntime and numpy; so does
``kospeech serve DIR``. Needs the ``export`` extra: pip install 'kospeech[export]'.

``--format sherpa-onnx`` writes a directory for sherpa-onnx instead (model.onnx with CMVN inside and
its metadata, tokens.txt, README.md; [model.int8.onnx]), loaded with ``sherpa_onnx.OfflineRecognizer.from_wenet_ctc``:
CTC models whose frontend is ``kaldi_fbank`` (what sherpa-onnx computes), see kospeech.export.sherpa.
``--format sherpa-onnx-online`` writes the same for its streaming ``sherpa_onnx.OnlineRecognizer.from_wenet_ctc``
(models whose frames depend on a bounded stretch of audio: convolutional encoders, chunk-wise attention with
``left_chunks``), see kospeech.export.sherpa_online.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def export(args: argparse.Namespace) -> int:
    from kospeech.export.onnx import export_onnx

    if args.format == "sherpa-onnx":
        from kospeech.export.sherpa import export_sherpa

        out = export_sherpa(args.checkpoint, args.out, quantize=args.quantize)
        logger.info("wrote %s; run it with sherpa_onnx.OfflineRecognizer.from_wenet_ctc (see %s/README.md)", out, out)
        return 0
    if args.format == "sherpa-onnx-online":
        from kospeech.export.sherpa_online import LOADER, export_sherpa_online

        out = export_sherpa_online(args.checkpoint, args.out, quantize=args.quantize)
        logger.info("wrote %s; run it with %s (see %s/README.md)", out, LOADER, out)
        return 0

    out = export_onnx(args.checkpoint, args.out, quantize=args.quantize)
    logger.info("wrote %s; run it with kospeech.runtime.load(%r) or `kospeech serve %s`", out, str(out), out)
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[parent],
        help="export a checkpoint to ONNX for the torch-free runtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="MODEL",
                   help="a package, a checkpoint .pt (or an exp dir with checkpoints/last.pt)")
    p.add_argument("--format", choices=["onnx", "sherpa-onnx", "sherpa-onnx-online"], default="onnx",
                   help="onnx (our runtime), sherpa-onnx (CTC models trained on kaldi_fbank: model.onnx, tokens.txt) "
                        "or sherpa-onnx-online (the same for its streaming recognizer)")
    p.add_argument("--out", required=True, help="output directory (an earlier export there is replaced)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="also write model.int8.onnx (dynamic int8)")
    p.set_defaults(func=export)
