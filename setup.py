"""Install the ``kospeech`` package and its console script."""

from setuptools import find_packages, setup

setup(
    name="kospeech",
    version="0.1.0",
    description="Korean end-to-end speech recognition toolkit (plugin registry, recipes for KsponSpeech and Zeroth)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kospeech", "kospeech.*"]),
    package_data={"kospeech": ["resources/*", "resources/**/*"]},
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
        "lm": ["kenlm>=0.2"],
        # train.tensorboard: true (torch.utils.tensorboard writes through it)
        "tensorboard": ["tensorboard>=2.14"],
        # every extra, so that CI tests them all
        "dev": ["pytest>=7", "pytest-xdist>=3", "ruff>=0.6", "hypothesis>=6", "kenlm>=0.2", "tensorboard>=2.14"],
    },
    entry_points={"console_scripts": ["kospeech = kospeech.cli:main"]},
)
