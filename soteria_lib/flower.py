"""Soteria inside a Flower federation: FedAvg on Flower's simulation engine, with any registered
defense on the clients and an optional curious server (chapter 9).

* The :func:`client_app` trains like a client of :func:`~soteria_lib.federated.run_fedavg`:
  :func:`~soteria_lib.federated.local_sgd` on its own examples, every step through the client
  contract (:func:`~soteria_lib.threat.share_update`: a private batch in, a defended update out).
  It returns its weights, its number of examples and its number of steps.
* The server runs :class:`LibraryFedAvg`, Flower's FedAvg strategy with this library's client
  sampling (:func:`~soteria_lib.federated.round_plan`) and averaging
  (:func:`~soteria_lib.aggregation.average_states`, in the same order), so a federation repeats
  our own loop's rounds, (2) of chapter 6: ``w_{t+1} = sum_k n_k w_k / sum_k n_k``.
* A :class:`~soteria_lib.curious_server.CuriousServer`, when given, attacks the updates as they
  arrive and keeps what it rebuilt; the ground truth is read only afterwards, by
  :func:`~soteria_lib.curious_server.score`.

Each Flower node is one client (its ``partition-id`` is its index in
:func:`~soteria_lib.federated.client_parts`) and runs in a Ray worker on this machine, with one
CPU and one torch thread. The clients of a deterministic defense (none, Soteria, pruning) draw
exactly what they draw in our loop; a noise defense draws from a seed of (run, round, client)
instead of one stream shared by all clients, the same noise in distribution.

Needs the extra: ``pip install 'soteria-lib[flower]'``.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, replace

import torch

from .curious_server import CuriousServer
from .data import dataset_info, resolve_root
from .aggregation import average_states
from .federated import (FedAvgDiverged, FedAvgExperiment, client_parts,
                        evaluate, load_split, local_sgd, round_plan)
from .runtime import seed_everything, where_it_ran
from .scales import get_scale
from .ray_cluster import check_reachable

FLOWER_MISSING = "the Flower federation needs Flower: pip install 'soteria-lib[flower]'"


class FlowerMissing(ImportError):
    """The Flower federation was asked for where Flower is not installed."""


try:
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
except ImportError:
    raise FlowerMissing(FLOWER_MISSING) from None


class FederationFailed(RuntimeError):
    """A client answered a round with an error, or not at all."""


@dataclass(frozen=True)
class Federation:
    """A FedAvg experiment run as a Flower federation of ``experiment.training.clients`` nodes.

    ``train_examples`` overrides the scale's number of training examples (None: the scale's),
    for example to give each client one image; ``max_attacked`` is the largest client update
    (in examples) the curious server attacks, since an attack's cost grows with the batch."""

    experiment: FedAvgExperiment
    train_examples: int | None = None
    data_root: str | None = None
    max_attacked: int = 8

    def __post_init__(self):
        if self.train_examples is not None and (isinstance(self.train_examples, bool)
                                                or not isinstance(self.train_examples, int)
                                                or self.train_examples < 1):
            raise ValueError(f"train_examples must be an integer >= 1, got {self.train_examples!r}")
        object.__setattr__(self, "data_root", str(resolve_root(self.data_root)))  # the same on every worker

    def split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        budget = get_scale(self.experiment.scale).fedavg
        limit = (budget.train_examples if self.train_examples is None else self.train_examples) if train \
            else budget.test_examples
        return load_split(self.experiment.dataset, self.data_root, train, limit)

    def model(self) -> torch.nn.Module:
        return self.experiment.build_model()


@functools.lru_cache(maxsize=4)
def client_data(federation: Federation, partition: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of client ``partition`` (loaded once per worker process)."""
    inputs, labels = federation.split(train=True)
    index = client_parts(labels, federation.experiment.training)[partition]
    return inputs[index], labels[index]


def local_steps(examples: int, federation: Federation) -> int:
    training = federation.experiment.training
    return training.local_epochs * math.ceil(examples / training.batch_size)


def client_defense(experiment: FedAvgExperiment, round_index: int, client: int):
    """The client's defense; a seeded one draws from a seed of (run, round, client)."""
    seed = (experiment.training.seed * 1_000_003 + round_index * 7_919 + client * 104_729) % 2**32
    return replace(experiment, training=replace(experiment.training, seed=seed)).build_defense()


def client_app(federation: Federation) -> ClientApp:
    """The clients: each answers which partition it holds, and trains on it when asked."""
    app = ClientApp()
    experiment = federation.experiment
    normalization = dataset_info(experiment.dataset).normalization

    @app.query()
    def describe(message: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        _, labels = client_data(federation, partition)
        return Message(RecordDict({"client": MetricRecord({"partition-id": partition, "num-examples": len(labels)})}),
                       reply_to=message)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        partition = int(context.node_config["partition-id"])
        inputs, labels = client_data(federation, partition)
        config = message.content["config"]
        model = federation.model()
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
        generator = torch.Generator().set_state(torch.frombuffer(bytearray(config["batch-order"]), dtype=torch.uint8))
        defense = client_defense(experiment, int(config["server-round"]), partition)
        local_sgd(model, inputs, labels, experiment.training, defense, generator, normalization)
        metrics = MetricRecord({"num-examples": len(labels), "partition-id": partition,
                                "steps": local_steps(len(labels), federation)})
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=message)

    return app


class LibraryFedAvg(FedAvg):
    """Flower's FedAvg with the library's sampling and averaging order, and a curious server."""

    def __init__(self, federation: Federation, nodes: dict[int, int], sizes: list[int],
                 curious: CuriousServer | None = None):
        super().__init__(fraction_evaluate=0.0, min_available_nodes=len(nodes))
        self.federation, self.nodes, self.sizes, self.curious = federation, nodes, sizes, curious
        self.order: list[int] = []
        self.sent: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        plan = round_plan(self.federation.experiment.training, server_round, self.sizes)
        self.order, self.sent = [k for k, _ in plan], arrays
        return [Message(RecordDict({"arrays": arrays,
                                    "config": ConfigRecord({"server-round": server_round,
                                                            "batch-order": bytes(generator.get_state().numpy())})}),
                        dst_node_id=self.nodes[k], message_type=MessageType.TRAIN) for k, generator in plan]

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        failed = [reply.error.reason for reply in replies if reply.has_error()]
        if failed:
            raise FederationFailed(f"round {server_round}: a client failed ({failed[0].strip().splitlines()[-1][:200]})")
        contents = {int(reply.content["metrics"]["partition-id"]): reply.content for reply in replies}
        missing = sorted(set(self.order) - set(contents))
        if missing:
            raise FederationFailed(f"round {server_round}: no update from client {missing[0]}")
        states = [contents[k]["arrays"].to_torch_state_dict() for k in self.order]
        metrics = [contents[k]["metrics"] for k in self.order]
        if self.curious is not None and self.curious.watches(server_round):
            self.observe(server_round, states, metrics)
        weights = [int(m["num-examples"]) for m in metrics]
        return ArrayRecord(average_states(states, weights)), MetricRecord({"clients": len(states)})

    def observe(self, server_round: int, states: list[dict], metrics: list) -> None:
        experiment = self.federation.experiment
        info = dataset_info(experiment.dataset)
        for k, state, m in zip(self.order, states, metrics):
            if int(m["num-examples"]) > self.federation.max_attacked:
                continue
            model = self.federation.model()
            model.load_state_dict(self.sent.to_torch_state_dict())
            self.curious.observe(server_round, k, model, state, experiment.training.lr, int(m["steps"]),
                                 int(m["num-examples"]), info.shape, info.normalization, experiment.setting())


def _nodes(grid: Grid, count: int, timeout: float) -> tuple[dict[int, int], list[int]]:
    """Wait for ``count`` nodes; ask each which client it is: ({client: node id}, sizes by client)."""
    deadline = time.monotonic() + timeout
    ids = list(grid.get_node_ids())
    while len(ids) < count:
        if time.monotonic() > deadline:
            raise FederationFailed(f"only {len(ids)} of {count} Flower nodes came up within {timeout:.0f}s")
        time.sleep(0.1)
        ids = list(grid.get_node_ids())
    query = [Message(RecordDict({"config": ConfigRecord()}), dst_node_id=i, message_type=MessageType.QUERY)
             for i in ids]
    nodes, sizes = {}, [0] * count
    for reply in grid.send_and_receive(query, timeout=timeout):
        if reply.has_error():
            raise FederationFailed(f"a Flower node failed to start ({reply.error.reason.strip()[:200]})")
        answer = reply.content["client"]
        nodes[int(answer["partition-id"])] = reply.metadata.src_node_id
        sizes[int(answer["partition-id"])] = int(answer["num-examples"])
    if len(nodes) < count:
        raise FederationFailed(f"only {len(nodes)} of {count} Flower nodes answered within {timeout:.0f}s")
    return nodes, sizes


def server_app(federation: Federation, curious: CuriousServer | None, outcome: dict,
               timeout: float = 600.0) -> ServerApp:
    """The server: FedAvg with central evaluation on the test split after every round, as our
    loop does. Its history (and any error) goes into ``outcome``: the app runs in a thread."""
    app = ServerApp()
    experiment = federation.experiment

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            nodes, sizes = _nodes(grid, experiment.training.clients, timeout)
            test = federation.split(train=False)
            seed_everything(experiment.training.seed)
            model = federation.model()
            history, clock = [], [time.perf_counter()]

            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
                model.load_state_dict(arrays.to_torch_state_dict())
                record = evaluate(model, *test)
                now = time.perf_counter()
                history.append({"round": server_round, **record,
                                "seconds": 0.0 if server_round == 0 else now - clock[0]})
                clock[0] = now
                if not math.isfinite(record["loss"]):
                    raise FedAvgDiverged(server_round, history[:-1], f"the test loss is {record['loss']}")
                return MetricRecord(record)

            strategy = LibraryFedAvg(federation, nodes, sizes, curious)
            strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=experiment.training.rounds,
                           timeout=timeout, evaluate_fn=evaluate_fn)
            outcome["history"] = history
        except BaseException as exc:  # re-raised by run_flower in the caller's thread
            outcome["error"] = exc

    return app


def run_flower(federation: Federation, curious: CuriousServer | None = None, cpus: int = 2,
               address: str | None = None, verbose: bool = False) -> dict:
    """Run the federation on Flower's simulation engine: on the Ray cluster at ``address``
    (``HOST:PORT`` of a head, :mod:`soteria_lib.sweep.cluster`), or on a Ray started here with
    ``cpus`` CPUs; each client takes one CPU. Returns a result of
    :func:`~soteria_lib.federated.run_experiment`'s form (identity, where it ran, final accuracy,
    seconds, per-round history) plus the engine."""
    experiment = federation.experiment
    if address:
        check_reachable(address)
    outcome: dict = {}
    flower_log = logging.getLogger("flwr")
    level, pythonpath = flower_log.level, os.environ.get("PYTHONPATH")
    flower_log.setLevel(logging.INFO if verbose else logging.ERROR)
    ray_options = {"address": address} if address else {"num_cpus": cpus}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="ray")  # Ray's tip on GPU variables
            run_simulation(server_app(federation, curious, outcome), client_app(federation),
                           num_supernodes=experiment.training.clients,
                           backend_config={"client_resources": {"num_cpus": 1},
                                           "init_args": {**ray_options, "include_dashboard": False,
                                                         "log_to_driver": verbose}})
    finally:
        flower_log.setLevel(level)
        if pythonpath is None:  # Flower's Ray backend sets it to this process's sys.path
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath
    if "error" in outcome:
        raise outcome["error"]
    if "history" not in outcome:
        raise FederationFailed("the Flower simulation stopped before the server finished")
    history = outcome["history"]
    return {**experiment.identity(), **where_it_ran("cpu"), "engine": f"flwr {flwr.__version__}",
            "train_examples": len(federation.split(train=True)[1]),
            "final_accuracy": history[-1]["accuracy"], "seconds": round(time.perf_counter() - start, 2),
            "history": history}
