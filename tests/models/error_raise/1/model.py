"""error_raise: execute raises ValueError (every request of the batch must fail with INTERNAL)."""


class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("boom in execute")
