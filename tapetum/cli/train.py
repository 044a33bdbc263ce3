"""``tapetum train``: train the models Tapetum runs, from data on disk.

A typer sub-app so that each trainer is one command (``tapetum train forecast``; others can
join). Training needs the ``train`` extra (torch); the command imports it only when it runs,
and the files it writes run with ONNX Runtime alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from tapetum.cli.classify import train_classify_command
from tapetum.errors import ConfigError

train_app = typer.Typer(
    name="train",
    help="Train models Tapetum runs (needs the train extra, torch).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
train_app.command("classify")(train_classify_command)


@train_app.command("forecast")
def forecast(  # noqa: PLR0917 - typer maps parameters to options
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="MOTChallenge split or sequence folders with gt/gt.txt (repeat: "
            "--data MOT17/train --data MOT15/train --data MOT20/train).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Sequence names to leave out (repeat), e.g. a test sequence."),
    ] = None,
    horizon: Annotated[
        float, typer.Option(help="Longest horizon the model forecasts, seconds.")
    ] = 2.0,
    dt: Annotated[
        float, typer.Option(help="Time step of the history and horizon grids, seconds.")
    ] = 0.1,
    history: Annotated[int, typer.Option(help="History points (the last (N-1)·dt s).")] = 12,
    min_history: Annotated[
        float,
        typer.Option(help="Tracks observed for less than this (s) use constant velocity."),
    ] = 0.2,
    hidden: Annotated[int, typer.Option(help="Width of the MLP's hidden layers.")] = 128,
    epochs: Annotated[int, typer.Option(help="Passes over the training samples.")] = 20,
    context: Annotated[
        bool,
        typer.Option(
            "--context/--no-context",
            help="Also read the neighbour context (median motion of the frame's tracks).",
        ),
    ] = False,
    neighbours: Annotated[
        int,
        typer.Option(
            help="Networks that read the context also pool the motion of this many nearest "
            "other tracks."
        ),
    ] = 0,
    drift: Annotated[
        float,
        typer.Option(
            help="Camera-pan augmentation: std of the added image velocity, box heights/s (0: off)."
        ),
    ] = 1.0,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble/--no-ensemble",
            help="Also train a second network that reads the neighbour context without the "
            "camera-pan augmentation (the default recipe); streams weigh the two and constant "
            "velocity by how well each did on them.",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
) -> None:
    """Train the learned trajectory forecaster on ground-truth tracks; write OUT (ONNX)."""
    from rich.console import Console

    from tapetum.eval.mot import find_sequences, load_sequence
    from tapetum.learn.forecast import ForecastTrainConfig, train_forecaster

    steps = round(horizon / dt) if dt > 0 else 0
    if steps < 1 or abs(steps * dt - horizon) > 1e-6:
        raise ConfigError(f"horizon must be a positive multiple of dt ({dt:g} s), got {horizon:g}")
    config = ForecastTrainConfig(
        dt_s=dt,
        history_steps=history,
        horizon_steps=steps,
        min_history_s=min_history,
        hidden=hidden,
        epochs=epochs,
        context=context,
        context_neighbours=neighbours,
        drift_std_hps=drift,
        seed=seed,
        threads=threads,
    )
    if not ensemble:
        config = dataclasses.replace(config, extra_members=())
    skip = set(exclude or ())
    sequences = [
        load_sequence(p) for folder in data for p in find_sequences(folder) if p.name not in skip
    ]
    if not sequences:
        raise ConfigError("no sequences left to train on")
    err = Console(stderr=True)
    err.print(f"training on {len(sequences)} sequences: {', '.join(s.name for s in sequences)}")
    result = train_forecaster(
        sequences, out, config, log=lambda line: err.print(line, highlight=False)
    )
    scales = " ".join(f"{s:.2f}" for s in result.spec.scales)
    Console().print(
        f"{result.path}: {result.train_samples} training samples, best epoch "
        f"{result.best_epoch}, validation NLL {result.validation_nll:.3f}, "
        f"{result.seconds:.0f} s\ncovariance scale per {dt:g} s step: {scales}",
        highlight=False,
    )
