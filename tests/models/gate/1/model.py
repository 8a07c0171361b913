"""gate: each execution appends its requests' `tag` parameters (one line per execution, space-separated) to
`<dir>/order`, creates `<dir>/started-<tag>`, then waits until `<dir>/open-<tag>` or `<dir>/open` exists (at most
60 s) before echoing INPUT0. `dir` is a request parameter; a request without it runs at once.

Tests use it to hold an instance busy and to read the order in which queued requests ran.
"""

import json
import os
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        params = [json.loads(r.parameters()) for r in requests]
        folder = params[0].get("dir")
        if folder:
            tags = [str(p.get("tag", "")) for p in params]
            with open(os.path.join(folder, "order"), "a") as file:
                file.write(" ".join(tags) + "\n")
            for tag in tags:
                open(os.path.join(folder, f"started-{tag}"), "w").close()
            deadline = time.monotonic() + 60
            gates = [os.path.join(folder, "open")] + [os.path.join(folder, f"open-{t}") for t in tags]
            while not any(os.path.exists(g) for g in gates) and time.monotonic() < deadline:
                time.sleep(0.01)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
