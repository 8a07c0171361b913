"""pb_utils parity: Logger as documented (file and line of each call appear in the server log), get_model_dir(),
the module's public names (OUT: a JSON object with both), and time spent in execute (IN[0] seconds of sleep)."""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        logger = pb_utils.Logger
        logger.log_info("info line with\nnewline")
        logger.log("warning line", pb_utils.Logger.WARNING)
        logger.log("error line", logger.ERROR)
        logger.log("verbose line", logger.VERBOSE)
        logger.log_warn("log_warn line")
        logger.log_error("log_error line")
        logger.log_verbose("log_verbose line")
        logger.log("default level line")

    def execute(self, requests):
        responses = []
        for request in requests:
            seconds = float(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            time.sleep(seconds)
            names = sorted(name for name in dir(pb_utils) if not name.startswith("_"))
            logger = sorted(name for name in dir(pb_utils.Logger) if not name.startswith("_"))
            found = {"model_dir": pb_utils.get_model_dir(), "names": names, "logger": logger}
            out = pb_utils.Tensor("OUT", np.array([json.dumps(found)], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
