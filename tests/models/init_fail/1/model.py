"""init_fail: initialize raises, naming a file of the model directory (the path must not reach clients)."""

import os


class TritonPythonModel:
    def initialize(self, args):
        weights = os.path.join(args["model_repository"], args["model_version"], "weights.bin")
        raise RuntimeError(f"cannot read {weights}")

    def execute(self, requests):
        return []
