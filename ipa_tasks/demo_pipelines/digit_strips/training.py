"""The one training loop every learned variant uses: seeded, single-threaded, CPU only.

Single-threaded because other jobs (profiling, the other demo pipeline's build) share the machine's two
cores, and because a fixed thread count is part of what makes the result the same on every run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ipa_tasks.demo_pipelines import Log

LossFunction = Callable[..., torch.Tensor]


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread, restored afterwards: on two shared cores a second thread mostly waits for the
    first and slows small tensors down."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def deterministic(seed: int) -> Iterator[torch.Generator]:
    """Seed torch and use one thread."""
    with single_thread():
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def fit(
    model: nn.Module,
    loss: LossFunction,
    tensors: tuple[torch.Tensor, ...] | Callable[[int], tuple[torch.Tensor, ...]],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    log: Log,
    name: str,
) -> list[float]:
    """Adam with a cosine-decayed learning rate over ``epochs`` passes of shuffled minibatches of
    ``tensors`` (same first dimension), or of ``tensors(epoch)`` when each epoch gets freshly augmented
    data of the same size; ``loss(model, *batch)`` gives the minibatch loss. Returns the mean loss of each
    epoch, which is also logged."""
    data = tensors if callable(tensors) else (lambda _epoch: tensors)
    first = data(0)
    count = len(first[0])
    steps = epochs * math.ceil(count / batch_size)
    losses: list[float] = []
    with deterministic(seed) as generator:
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
        )
        model.train()
        for epoch in range(epochs):
            epoch_tensors = first if epoch == 0 else data(epoch)
            order = torch.randperm(count, generator=generator)
            total = 0.0
            for start in range(0, count, batch_size):
                index = order[start : start + batch_size]
                batch = tuple(t[index] for t in epoch_tensors)
                value = loss(model, *batch)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                schedule.step()
                total += float(value.detach()) * len(index)
            losses.append(total / count)
            log(f"{name}: epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f}")
        model.eval()
    return losses


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_weights(model: nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
