"""`python -m model_server train|serve`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

_Config = TypeVar("_Config")


def _quiet_tensorflow() -> None:
    # C++ logging is read when TensorFlow loads, so this must run before the import.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0-65535), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of the model server."""
    from model_server.training import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LICENCE

    parser = argparse.ArgumentParser(
        prog="python -m model_server",
        description="Train the digit CNN and serve it with a TF-Serving-compatible API.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser("train", help="train the CNN and export a new version")
    train.add_argument("--model-base", type=Path, required=True, help="export root directory")
    train.add_argument("--name", default="mnist", help="model name (default: mnist)")
    train.add_argument(
        "--epochs", type=_positive, default=DEFAULT_EPOCHS, help=f"default {DEFAULT_EPOCHS}"
    )
    train.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE)
    train.add_argument(
        "--mnist",
        type=Path,
        metavar="DIR",
        help="train on MNIST IDX files (raw or .gz) in DIR instead of scikit-learn's digits",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--licence",
        default=DEFAULT_LICENCE,
        help=f"SPDX licence id recorded in the model card (default {DEFAULT_LICENCE})",
    )
    train.add_argument("--version", type=_positive, help="version number (default: next free)")
    train.add_argument(
        "--max-train-examples",
        type=_positive,
        help="train on the first N examples only (quick smoke models)",
    )
    train.add_argument("--threads", type=_positive, default=min(2, os.cpu_count() or 1))

    serve = commands.add_parser("serve", help="serve models over REST and gRPC")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model-base", type=Path, help="directory holding <model>/<version>/ directories"
    )
    source.add_argument(
        "--model-config-file", type=Path, help="TF Serving text ModelServerConfig file"
    )
    serve.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    serve.add_argument(
        "--rest-port", type=_port, default=8501, help="REST port (default 8501; 0 = any free)"
    )
    serve.add_argument(
        "--grpc-port", type=_port, default=8500, help="gRPC port (default 8500; 0 = any free)"
    )
    batching = serve.add_argument_group("dynamic batching")
    batching.add_argument(
        "--enable-batching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge concurrent requests into one model call (default on)",
    )
    batching.add_argument(
        "--batching-parameters-file",
        type=Path,
        help="TF Serving text BatchingParameters file (overrides the flags below)",
    )
    batching.add_argument("--max-batch-size", type=_positive, default=32)
    batching.add_argument("--batch-timeout-micros", type=_non_negative, default=1000)
    batching.add_argument("--max-enqueued-batches", type=_positive, default=100)
    batching.add_argument("--num-batch-threads", type=_positive, default=1)
    serve.add_argument(
        "--model-threads",
        type=_positive,
        default=2,
        help="threads running model calls when batching is off (default 2)",
    )
    serve.add_argument(
        "--tensorflow-intra-op-parallelism",
        type=_non_negative,
        default=min(2, os.cpu_count() or 1),
        help="threads inside one op (0 = TensorFlow decides)",
    )
    serve.add_argument(
        "--tensorflow-inter-op-parallelism",
        type=_non_negative,
        default=1,
        help="ops run in parallel (0 = TensorFlow decides)",
    )
    serve.add_argument(
        "--tensorflow-thread-spinning",
        action="store_true",
        help="let idle TensorFlow threads spin-wait for work (TensorFlow's default; off here "
        "because spinning threads take CPU from the event loop)",
    )
    serve.add_argument(
        "--file-system-poll-wait-seconds",
        type=float,
        default=1.0,
        help="how often model directories are scanned for new versions (default 1)",
    )
    serve.add_argument(
        "--rest-api-timeout-in-ms",
        type=_positive,
        default=30000,
        help="per-request timeout; exceeded requests get 504 (default 30000)",
    )
    serve.add_argument("--rest-api-enable-cors-support", action="store_true")
    serve.add_argument(
        "--stats-path",
        help="serve JSON counters (model calls, batch sizes) at this REST path, e.g. "
        "/monitoring/model_server/stats (off by default)",
    )
    serve.add_argument(
        "--monitoring-config-file",
        type=Path,
        metavar="FILE",
        help="TF Serving text MonitoringConfig file; with "
        "`prometheus_config { enable: true }` Prometheus metrics are served on the REST port "
        "(default path /monitoring/prometheus/metrics)",
    )
    serve.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop implementation (auto: uvloop when installed)",
    )
    serve.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from model_server.data import IdxError
    from model_server.training import TrainOptions, train_and_export

    options = TrainOptions(
        model_base=args.model_base,
        name=args.name,
        epochs=args.epochs,
        batch_size=args.batch_size,
        mnist_dir=args.mnist,
        seed=args.seed,
        licence=args.licence,
        version=args.version,
        max_train_examples=args.max_train_examples,
        threads=args.threads,
    )
    try:
        train_and_export(options, out=lambda line: print(line, flush=True))
    except (FileNotFoundError, FileExistsError, IdxError) as error:
        print(f"model_server train: error: {error}", file=sys.stderr)
        return 1
    return 0


def _read_or_report(read: Callable[[Path], _Config], path: Path) -> _Config | None:
    """A TF Serving text-format file, or None after printing its located error."""
    try:
        return read(path)
    except ValueError as error:
        print(f"model_server serve: error: {error}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from model_server.batching import BatchingParameters, read_batching_parameters
    from model_server.monitoring import MonitoringConfig, read_monitoring_config
    from model_server.servables import SessionOptions
    from model_server.server import ServeOptions, serve

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.stats_path is not None and not args.stats_path.startswith("/"):
        print(
            f"model_server serve: error: --stats-path {args.stats_path}: must start with /",
            file=sys.stderr,
        )
        return 2
    monitoring = MonitoringConfig()
    if args.monitoring_config_file is not None:
        configured = _read_or_report(read_monitoring_config, args.monitoring_config_file)
        if configured is None:
            return 1
        monitoring = configured
    batching: BatchingParameters | None = None
    if args.enable_batching:
        if args.batching_parameters_file is not None:
            batching = _read_or_report(read_batching_parameters, args.batching_parameters_file)
            if batching is None:
                return 1
        else:
            batching = BatchingParameters(
                max_batch_size=args.max_batch_size,
                batch_timeout_micros=args.batch_timeout_micros,
                max_enqueued_batches=args.max_enqueued_batches,
                num_batch_threads=args.num_batch_threads,
            )
    options = ServeOptions(
        model_base=args.model_base,
        model_config_file=args.model_config_file,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=args.grpc_port,
        batching=batching,
        model_threads=args.model_threads,
        session=SessionOptions(
            intra_op_threads=args.tensorflow_intra_op_parallelism,
            inter_op_threads=args.tensorflow_inter_op_parallelism,
            thread_spinning=args.tensorflow_thread_spinning,
        ),
        poll_seconds=args.file_system_poll_wait_seconds,
        timeout_seconds=args.rest_api_timeout_in_ms / 1000.0,
        enable_cors=args.rest_api_enable_cors_support,
        stats_path=args.stats_path,
        monitoring=monitoring,
        event_loop=args.event_loop,
    )
    return serve(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return _train(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
