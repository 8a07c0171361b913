"""TorchScript test models, scripted or traced at test time (no binary model is committed), and helpers that write
them into a repository. Needs torch (the `torch` extra)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch


class AddSub(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a - b


class Double(torch.nn.Module):
    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a * 2


class DictInput(torch.nn.Module):
    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return x["p"] * 2 + x["q"]


class DictOutput(torch.nn.Module):
    def forward(self, a: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": a}


class Strings(torch.nn.Module):
    """TYPE_STRING in and out: forward() takes and returns List[str] (Triton's pytorch backend convention)."""

    def forward(self, text: list[str], scale: torch.Tensor) -> tuple[list[str], torch.Tensor, list[str]]:
        upper = [item.upper() for item in text]
        lengths = torch.tensor([len(item) for item in text], dtype=torch.int64) * scale
        return upper, lengths, [item + "!" for item in text]


class JoinStrings(torch.nn.Module):
    """A single List[str] output (not in a tuple), of another length than its input."""

    def forward(self, text: list[str]) -> list[str]:
        return [" ".join(text)]


class ListOfInts(torch.nn.Module):
    """Returns a List[int]: not an output Triton's pytorch backend can map."""

    def forward(self, text: list[str]) -> list[int]:
        return [len(item) for item in text]


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def scripted(module: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; Triton's pytorch_libtorch still serves it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def traced_mlp() -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(mlp(), torch.zeros(2, 4)), buffer)
    return buffer.getvalue()


def write(root: Path, name: str, data: bytes | None, config: str) -> Path:
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (version / "model.pt").write_bytes(data)
    (root / name / "config.pbtxt").write_text(config)
    return version


def config(
    name: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]], extra: str = "", batch: int = 0
) -> str:
    """A pytorch_libtorch config; tensors as (name, 'TYPE_x dims')."""

    def tensors(items: list[tuple[str, str]]) -> str:
        return ", ".join(
            f'{{ name: "{n}", data_type: {spec.split()[0]}, dims: [ {spec.split(maxsplit=1)[1]} ] }}'
            for n, spec in items
        )

    return (
        f'name: "{name}"\nplatform: "pytorch_libtorch"\nmax_batch_size: {batch}\n'
        f"input [ {tensors(inputs)} ]\noutput [ {tensors(outputs)} ]\n{extra}\n"
    )
