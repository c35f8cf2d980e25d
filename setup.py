"""Install the ``kospeech`` package and its console script."""

from setuptools import find_packages, setup

EXPORT = ["onnx>=1.14", "onnxruntime>=1.16"]
SERVE = ["flask>=2.3", "flask-sock>=0.7"]  # flask-sock: the WebSocket /stream (over simple-websocket)
OPTIM = ["pytorch-optimizer>=3.0"]
LM = ["kenlm>=0.2"]
TENSORBOARD = ["tensorboard>=2.14"]

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
    install_requires=[
        "torch>=2.4,<2.15",  # torchaudio 2.11 (no pin of its own) loads beside torch up to 2.14
        "torchaudio>=2.4,<2.12",
        "librosa>=0.10",
        "numpy>=1.24",
        "sentencepiece>=0.2",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "soundfile>=0.12",
        "matplotlib>=3.7",
    ],
    extras_require={
        # KenLM's query module reads (and checks) the ARPA files of `kospeech lm train --type ngram`;
        # the n-gram itself is estimated and queried without it
        "lm": LM,
        # train.tensorboard: true (torch.utils.tensorboard writes through it)
        "tensorboard": TENSORBOARD,
        # `kospeech export` (and the torch-free runtime, which needs only onnxruntime of these)
        "export": EXPORT,
        # `kospeech serve`
        "serve": SERVE,
        # the adamp and novograd optimizers
        "optim": OPTIM,
        # tests exercise every extra (selenium drives the demo page in headless Chromium)
        "dev": [
            "pytest>=7", "pytest-xdist>=3", "ruff>=0.6", "hypothesis>=6", "selenium>=4.10", *EXPORT, *SERVE, *OPTIM,
            *LM, *TENSORBOARD, "openai>=1.40", "sherpa-onnx>=1.10",
        ],
    },
    entry_points={"console_scripts": ["kospeech = kospeech.cli:main"]},
)
