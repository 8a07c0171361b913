"""Custom metrics (pb_utils.MetricFamily) driven by the client: COMMAND is a JSON operation, RESULT says how it went.

At load: a counter, two gauges and a histogram with the values the differential test compares against Triton.
Commands: {"op": "family", "key", "name", "description", "kind"}, {"op": "metric", "key", "family", "labels",
"buckets"}, {"op": "increment" | "set" | "observe", "metric", "value"}, {"op": "value", "metric"},
{"op": "drop", "key" or "prefix"}, {"op": "families", "count"}, {"op": "metrics", "family", "count"} (that many
families or metrics, up to the first error).
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        family = pb_utils.MetricFamily
        self.objects = {
            "requests": family(name="probe_requests", description="Number of requests", kind=family.COUNTER),
            "gauge": family(name="probe_gauge", description="A gauge", kind=family.GAUGE),
            "latency": family(name="probe_latency", description="A histogram", kind=family.HISTOGRAM),
        }
        o = self.objects
        o["c"] = o["requests"].Metric(labels={"model": "custom_metrics", "version": "1"})
        o["g"] = o["gauge"].Metric(labels={"zeta": "z", "alpha": 'a"b\\c\nd'})
        o["g2"] = o["gauge"].Metric()
        o["h"] = o["latency"].Metric(labels={"kind": "x"}, buckets=[0.1, 1.0, 2.5])
        o["c"].increment(2)
        o["g"].set(3.5)
        o["g"].increment(-1)
        o["g2"].set(-0.25)
        for value in (0.05, 2.0, 10):
            o["h"].observe(value)

    def run(self, command):
        op = command["op"]
        o = self.objects
        if op == "family":
            kinds = {"counter": 0, "gauge": 1, "histogram": 2}  # pb_utils.MetricFamily is set up after import
            kind = command.get("kind")
            if kind in kinds:
                kind = (pb_utils.MetricFamily.COUNTER, pb_utils.MetricFamily.GAUGE, pb_utils.MetricFamily.HISTOGRAM)[
                    kinds[kind]
                ]
            o[command["key"]] = pb_utils.MetricFamily(
                name=command["name"], description=command.get("description", "d"), kind=kind
            )
            return None
        if op == "metric":
            kwargs = {k: command[k] for k in ("labels", "buckets") if k in command}
            o[command["key"]] = o[command["family"]].Metric(**kwargs)
            return None
        if op in ("increment", "set", "observe"):
            return getattr(o[command["metric"]], op)(command["value"])
        if op == "value":
            return o[command["metric"]].value()
        if op == "drop":
            for key in [k for k in o if k == command.get("key") or k.startswith(command.get("prefix", "\0"))]:
                del o[key]
            return None
        if op == "metrics":
            for i in range(command["count"]):
                o[f"m{i}"] = o[command["family"]].Metric(labels={"i": str(i)})
            return command["count"]
        if op == "families":
            for i in range(command["count"]):
                o[f"many{i}"] = pb_utils.MetricFamily(
                    name=f"many_{i}", description="d", kind=pb_utils.MetricFamily.GAUGE
                )
            return command["count"]
        raise ValueError(f"unknown op {op}")

    def execute(self, requests):
        responses = []
        for request in requests:
            command = json.loads(pb_utils.get_input_tensor_by_name(request, "COMMAND").as_numpy()[0])
            try:
                result = f"OK {self.run(command)!r}"
            except Exception as exc:
                result = f"{type(exc).__name__}: {exc}"
            responses.append(
                pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", np.array([result], dtype=np.object_))])
            )
        return responses
