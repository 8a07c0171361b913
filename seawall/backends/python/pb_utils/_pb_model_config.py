"""`ModelConfig` of Seawall's `triton_python_backend_utils` (a private helper of that module, which re-exports it):
the configuration handed to a model's `auto_complete_config`.
"""

import json

_INPUT_KEYS = {"name", "data_type", "dims", "optional", "format", "reshape", "is_shape_tensor",
               "allow_ragged_batch", "is_non_linear_format_io"}  # fmt: skip
_OUTPUT_KEYS = {"name", "data_type", "dims", "reshape", "label_filename", "is_shape_tensor",
                "is_non_linear_format_io"}  # fmt: skip


class ModelConfig:
    """The configuration handed to `auto_complete_config`; changes are merged back by the server."""

    def __init__(self, model_config):
        if isinstance(model_config, str):
            model_config = json.loads(model_config)
        self._model_config = model_config

    def as_dict(self):
        return self._model_config

    def set_max_batch_size(self, max_batch_size):
        current = int(self._model_config.get("max_batch_size", 0))
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in auto-complete-config "
                f"function for model '{self._model_config.get('name', '')}' specified max_batch_size "
                f"{max_batch_size}"
            )
        self._model_config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self):
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"configuration specified {other}, but auto-complete-config function for model "
                    f"'{self._model_config.get('name', '')}' tries to set dynamic_batching"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def _add(self, section, entry, allowed):
        if not isinstance(entry, dict):
            raise ValueError(f"model {section} must be a dict, got {type(entry).__name__}")
        for key in ("name", "data_type", "dims"):
            if key not in entry:
                raise ValueError(f"model {section} '{entry.get('name', '')}' is missing the '{key}' property")
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"model {section} '{entry['name']}' has unknown properties {sorted(unknown)}")
        for existing in self._model_config.setdefault(section, []):
            if existing.get("name") != entry["name"]:
                continue
            if existing.get("data_type", "TYPE_INVALID") not in ("TYPE_INVALID", entry["data_type"]):
                raise ValueError(
                    f"model {section} '{entry['name']}' has data_type {existing['data_type']} in the "
                    f"configuration, auto-complete-config specified {entry['data_type']}"
                )
            dims = [int(d) for d in existing.get("dims", [])]
            if dims and dims != [int(d) for d in entry["dims"]]:
                raise ValueError(
                    f"model {section} '{entry['name']}' has dims {dims} in the configuration, "
                    f"auto-complete-config specified {list(entry['dims'])}"
                )
            existing.update({k: v for k, v in entry.items() if k not in existing or not existing[k]})
            return
        self._model_config[section].append(dict(entry))

    def add_input(self, input):
        self._add("input", input, _INPUT_KEYS)

    def add_output(self, output):
        self._add("output", output, _OUTPUT_KEYS)

    def set_model_transaction_policy(self, transaction_policy_dict):
        if not isinstance(transaction_policy_dict, dict) or set(transaction_policy_dict) - {"decoupled"}:
            raise ValueError("model transaction policy accepts only the 'decoupled' property")
        self._model_config["model_transaction_policy"] = dict(transaction_policy_dict)
