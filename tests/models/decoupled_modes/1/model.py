"""decoupled_modes: a decoupled model that behaves as its request's `mode` parameter says (well or badly).

IN = n is the number of responses where a mode sends several; each OUT holds `size` (parameter, default 1)
copies of the response's index. Modes:
  inline        n responses from execute(), the last one with the final flag
  thread        n responses from a thread after execute() returned, then the final flag alone
  after_final   one final response, then another send (raises in the model: execute fails, logged)
  final_twice   the final flag alone twice (the second raises)
  drop          one response, then execute() returns and the sender is dropped without the final flag
  keep          one response; the sender is kept and never finished (only the request's timeout ends it)
  raise         execute() raises
  raise_thread  a thread sends one response, then raises
  error         one error response with the final flag
  return_list   execute() returns a list (not allowed for decoupled models)
  wait_cancel   logs 'wait_cancel: waiting', waits (up to 30 s) until the client goes away, logs what
                is_cancelled() said, sends final
  one_then_wait_cancel  one response, then as wait_cancel
  hold_input    keeps the sender and the IN array (a view, as as_numpy() gives it) past execute(), sends nothing
  release_held  answers every held request with one response holding its IN as read now, then the final flag
                (as NVIDIA's decoupled example reads its input from a thread after execute() returned)
"""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _response(index, size):
    return pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.full([size], index, dtype=np.int32))])


class TritonPythonModel:
    def initialize(self, args):
        self.kept = []
        self.held = []

    def execute(self, requests):
        for request in requests:
            parameters = json.loads(request.parameters())
            mode = parameters.get("mode", "inline")
            size = int(parameters.get("size", 1))
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            count = int(value[0])
            sender = request.get_response_sender()
            if mode == "inline":
                for index in range(count):
                    sender.send(_response(index, size), flags=FINAL if index == count - 1 else 0)
                if count == 0:
                    sender.send(flags=FINAL)
            elif mode == "thread":
                threading.Thread(target=self.stream, args=(sender, count, size)).start()
            elif mode == "after_final":
                sender.send(_response(0, size), flags=FINAL)
                sender.send(_response(1, size))
            elif mode == "final_twice":
                sender.send(flags=FINAL)
                sender.send(flags=FINAL)
            elif mode == "drop":
                sender.send(_response(0, size))
            elif mode == "keep":
                sender.send(_response(0, size))
                self.kept.append(sender)
            elif mode == "raise":
                raise ValueError("the model raised on purpose")
            elif mode == "raise_thread":
                threading.Thread(target=self.fail, args=(sender,)).start()
            elif mode == "error":
                error = pb_utils.TritonError("a bad request, says the model", pb_utils.TritonError.INVALID_ARG)
                sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
            elif mode == "return_list":
                sender.send(flags=FINAL)
                return [pb_utils.InferenceResponse([])]
            elif mode == "wait_cancel":
                threading.Thread(target=self.wait_cancel, args=(request, sender)).start()
            elif mode == "hold_input":
                self.held.append((sender, value))
            elif mode == "release_held":
                for held, array in self.held:
                    held.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array(array, np.int32))]))
                    held.send(flags=FINAL)
                self.held.clear()
                sender.send(flags=FINAL)
            elif mode == "one_then_wait_cancel":
                sender.send(_response(0, size))
                threading.Thread(target=self.wait_cancel, args=(request, sender)).start()
        return None

    def stream(self, sender, count, size):
        for index in range(count):
            sender.send(_response(index, size))
        sender.send(flags=FINAL)

    def fail(self, sender):
        sender.send(_response(0, 1))
        raise RuntimeError("the model's thread raised on purpose")

    def wait_cancel(self, request, sender):
        pb_utils.Logger.log_warn("wait_cancel: waiting")  # a test waits for it to know the model holds the request
        deadline = time.monotonic() + 30
        while not sender.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = f"sender.is_cancelled()={sender.is_cancelled()} request.is_cancelled()={request.is_cancelled()}"
        pb_utils.Logger.log_warn(f"wait_cancel: {seen}")
        sender.send(flags=FINAL)
