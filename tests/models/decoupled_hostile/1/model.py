"""decoupled_hostile: a decoupled model that writes forged stub frames to the server (its request's `mode`
parameter picks which), as model code that took over its stub process could. Mode "ok" answers OUT = IN, final.

  future_batch    a Response to a batch the server never sent
  bad_descriptor  a Response whose tensor lies in a response region the stub never had
  inline_outside  a Response whose inline bytes do not hold its tensor
  inline_text     a Response whose inline bytes are not base64
  inline_size     a Response whose inline bytes are not as many as it says
  bad_grow        a ResponseGrow asking for no more than the region it has
"""

import gc
import json
import struct

import numpy as np
import triton_python_backend_utils as pb_utils


def _channel():
    for candidate in gc.get_objects():
        if type(candidate).__name__ == "Channel" and hasattr(candidate, "_control"):
            return candidate
    raise RuntimeError("no channel found")


def _forge(frame):
    payload = json.dumps(frame).encode()
    channel = _channel()
    with channel._lock:
        channel._control.sendall(struct.pack("<I", len(payload)) + payload)


# mode: (the tensor's offset, the size the Response says, its inline text); "BwAAAA==" is four bytes
_INLINE = {"inline_outside": (8, 4, "BwAAAA=="), "inline_text": (0, 4, "!!!!"), "inline_size": (0, 8, "BwAAAA==")}


class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            mode = json.loads(request.parameters()).get("mode", "ok")
            if mode == "future_batch":
                _forge(["response", 10**9, 0, None, True, 0])
            elif mode == "bad_descriptor":
                _forge(["response", request._seq, 0, [[["OUT", "INT32", [1], 1 << 40, 4]], None, "", None], False, 1])
            elif mode in _INLINE:
                entry = [[["OUT", "INT32", [1], _INLINE[mode][0], 4]], None, "", None]
                _forge(["response", request._seq, 0, entry, False, 1, *_INLINE[mode][1:]])
            elif mode == "bad_grow":
                _forge(["rgrow", 0])
            else:
                value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
                out = pb_utils.Tensor("OUT", np.array(value, dtype=np.int32))
                request.get_response_sender().send(
                    pb_utils.InferenceResponse([out]), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                )
        return None
