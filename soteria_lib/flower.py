"""Soteria in a Flower federation: the library's FedAvg as a Flower App, run with ``flwr run``
(chapter 9). The app itself (``flower_apps/federation``) is two thin modules that call this one.

* The clients (:func:`describe_client`, :func:`train_client`) train like the clients of
  :func:`~soteria_lib.federated.run_fedavg`: :func:`~soteria_lib.federated.local_sgd` on their
  own examples, every step through the client contract (:func:`~soteria_lib.threat.share_update`).
  They reply with their weights, their number of examples and of local steps.
* The server (:func:`serve`) runs :class:`LibraryFedAvg`, Flower's FedAvg with this library's
  client sampling and averaging order, so the federation repeats our loop's rounds, (2) of
  chapter 6: ``w_{t+1} = sum_k n_k w_k / sum_k n_k``, and evaluates centrally after every round.
* With an ``attack`` in the run config a :class:`~soteria_lib.curious_strategy.CuriousStrategy`
  wraps the strategy and attacks the updates as they arrive.

How the two engines agree bit for bit on one machine. Each Flower node is one client (its
``partition-id`` is its index in :func:`~soteria_lib.federated.client_parts`); the server first
asks every node which client it holds (a ``query`` message). Each round, the server computes the
round's plan (:func:`~soteria_lib.federated.round_plan`: which clients train, and the state of the
generator that orders each one's batches) and sends every chosen client, in its train message's
ConfigRecord, the round and that generator state (``batch-order``, bytes). The client restores the
generator and draws exactly the batches our loop draws; the server averages the replies in the
plan's order (:func:`~soteria_lib.aggregation.average_states`). Every process runs one torch
thread. A noise defense draws from a seed of (run, round, client) instead of one stream shared
by the clients in turn: the same noise in distribution, not the same draws.

The run config (``[tool.flwr.app.config]`` of the app, overridden with ``flwr run --run-config``)
holds :data:`RUN_CONFIG`; the record of a run is written by :mod:`soteria_lib.flower_run`.
Needs the extra: ``pip install 'soteria-lib[flower]'``.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import torch

from .aggregation import average_states
from .curious_server import CuriousServer
from .data import dataset_info, resolve_root
from .defenses import DefenseSetting, from_flags
from .federated import (FedAvgConfig, FedAvgDiverged, FedAvgExperiment,
                        client_parts, evaluate, load_split, local_sgd, round_plan)
from .flower_mods import EXAMPLES_KEY, LR_KEY, STEPS_KEY, build_defense, client_seed
from .flower_run import RunRecord
from .runtime import seed_everything
from .scales import get_scale

import flwr  # noqa: E402  (after flower_mods, which says in one line when Flower is missing)
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.serverapp.strategy import FedAvg, Strategy  # noqa: E402

# The run config of the federation app, with the meaning of each key (0 or "": not given).
RUN_CONFIG = {
    "dataset": "mnist or cifar10", "model": "a model of soteria_lib.models", "scale": "teaching, ...",
    "train-examples": "training examples over all clients (0: the scale's)", "data-root": "('': $SOTERIA_DATA)",
    "clients": "K, the federation's number of SuperNodes", "fraction": "C", "rounds": "T",
    "local-epochs": "E", "batch-size": "B", "lr": "eta", "alpha": "Dirichlet label skew (0: IID split)",
    "seed": "the run's seed", "defense": "a registered defense, on every local step",
    "pruning-rate": "in percent", "noise": "the noise defenses' scale (0: not given)",
    "clip": "the noise defenses' clipping bound (0: not given)",
    "attack": "the curious server's attack ('': none)", "attack-rounds": "'' (all) or '1,3'",
    "max-attacked": "largest update attacked, in examples", "output-dir": "where the run's record goes",
}
TIMEOUT = 600.0  # seconds to wait for the nodes, and for a round's replies


class FederationFailed(RuntimeError):
    """A client answered with an error, or not at all."""


def _setting(config, key: str):
    value = config[key]
    return None if value in (0, 0.0, "") else value


@dataclass(frozen=True)
class Federation:
    """A FedAvg experiment as a Flower federation of ``experiment.training.clients`` nodes;
    ``train_examples`` overrides the scale's number of training examples; the curious server
    attacks updates of at most ``max_attacked`` examples (an attack's cost grows with the batch)."""

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

    @classmethod
    def from_run_config(cls, config) -> "Federation":
        """The federation a run config describes (:data:`RUN_CONFIG`); a missing key is refused."""
        missing = sorted(set(RUN_CONFIG) - set(config))
        if missing:
            raise ValueError(f"the run config lacks {missing[0]!r} (keys: {', '.join(RUN_CONFIG)})")
        alpha = _setting(config, "alpha")
        training = FedAvgConfig(clients=config["clients"], fraction=config["fraction"], rounds=config["rounds"],
                                local_epochs=config["local-epochs"], batch_size=config["batch-size"],
                                lr=config["lr"], iid=alpha is None, alpha=alpha or 0.5, seed=config["seed"])
        name, settings = defense_settings(config)
        experiment = FedAvgExperiment(dataset=config["dataset"], model=config["model"], scale=config["scale"],
                                      defense=name, defense_settings=from_flags(name, **settings), training=training)
        return cls(experiment, _setting(config, "train-examples"), _setting(config, "data-root"),
                   config["max-attacked"])

    def split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        budget = get_scale(self.experiment.scale).fedavg
        limit = (budget.train_examples if self.train_examples is None else self.train_examples) if train \
            else budget.test_examples
        return load_split(self.experiment.dataset, self.data_root, train, limit)

    def model(self) -> torch.nn.Module:
        return self.experiment.build_model()


def defense_settings(config) -> tuple[str, dict]:
    """The defense a run config names, and its settings for :func:`~soteria_lib.flower_mods.build_defense`."""
    return config["defense"], {"pruning_rate": float(config["pruning-rate"]), "noise": _setting(config, "noise"),
                               "clip": _setting(config, "clip")}


@functools.lru_cache(maxsize=4)
def client_data(federation: Federation, partition: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of client ``partition`` (loaded once per process)."""
    inputs, labels = federation.split(train=True)
    index = client_parts(labels, federation.experiment.training)[partition]
    return inputs[index], labels[index]


def local_steps(examples: int, training: FedAvgConfig) -> int:
    return training.local_epochs * math.ceil(examples / training.batch_size)


def node_partition(federation: Federation, context: Context) -> int:
    """This node's client (its ``partition-id``); a federation of another size than ``clients`` is refused."""
    clients, nodes = federation.experiment.training.clients, int(context.node_config["num-partitions"])
    if nodes != clients:
        raise ValueError(f"the federation has {nodes} SuperNodes but the run config asks for clients={clients}; "
                         f"run with --federation-config 'num-supernodes={clients}'")
    return int(context.node_config["partition-id"])


def describe_client(message: Message, context: Context) -> Message:
    """The answer to the server's ``query``: which client this node is, and how many examples it holds."""
    federation = Federation.from_run_config(context.run_config)
    partition = node_partition(federation, context)
    _, labels = client_data(federation, partition)
    return Message(RecordDict({"client": MetricRecord({"partition-id": partition, EXAMPLES_KEY: len(labels)})}),
                   reply_to=message)


def train_client(message: Message, context: Context) -> Message:
    """One round of local SGD from the weights and batch order the server sent."""
    torch.set_num_threads(1)
    federation = Federation.from_run_config(context.run_config)
    experiment, partition = federation.experiment, node_partition(federation, context)
    inputs, labels = client_data(federation, partition)
    config = message.content["config"]
    model = federation.model()
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    generator = torch.Generator().set_state(torch.frombuffer(bytearray(config["batch-order"]), dtype=torch.uint8))
    name, settings = defense_settings(context.run_config)
    defense = build_defense(name, settings, client_seed(experiment.training.seed, int(config["server-round"]),
                                                       partition))
    local_sgd(model, inputs, labels, experiment.training, defense, generator,
              dataset_info(experiment.dataset).normalization)
    metrics = MetricRecord({EXAMPLES_KEY: len(labels), "partition-id": partition,
                            STEPS_KEY: local_steps(len(labels), experiment.training)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=message)


class LibraryFedAvg(FedAvg):
    """Flower's FedAvg with the library's client sampling, batch order and averaging order.
    ``nodes`` maps each client to its node, ``sizes`` holds each client's number of examples."""

    def __init__(self, federation: Federation, nodes: dict[int, int], sizes: list[int]):
        super().__init__(fraction_evaluate=0.0, min_available_nodes=len(nodes))
        self.federation, self.nodes, self.sizes = federation, nodes, sizes
        self.order: list[int] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        plan = round_plan(self.federation.experiment.training, server_round, self.sizes)
        self.order = [k for k, _ in plan]
        return [Message(RecordDict({"arrays": arrays,
                                    "config": ConfigRecord({**config, "server-round": server_round,
                                                            "batch-order": bytes(generator.get_state().numpy())})}),
                        dst_node_id=self.nodes[k], message_type=MessageType.TRAIN) for k, generator in plan]

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        failed = [reply.error.reason for reply in replies if reply.has_error()]
        if failed:
            reason = failed[0].strip().splitlines()[-1][:200]
            raise FederationFailed(f"round {server_round}: a client failed ({reason})")
        contents = {int(reply.content["metrics"]["partition-id"]): reply.content for reply in replies}
        missing = sorted(set(self.order) - set(contents))
        if missing:
            raise FederationFailed(f"round {server_round}: no update from client {missing[0]}")
        states = [contents[k]["arrays"].to_torch_state_dict() for k in self.order]
        weights = [int(contents[k]["metrics"][EXAMPLES_KEY]) for k in self.order]
        return ArrayRecord(average_states(states, weights)), MetricRecord({"clients": len(states)})


def wait_for_nodes(grid: Grid, count: int, timeout: float = TIMEOUT) -> tuple[dict[int, int], list[int]]:
    """Ask every node, as it comes up, which client it is, until ``count`` have answered:
    ({client: node id}, sizes by client). A node that refuses (a federation of another size)
    stops the run at once, with its reason."""
    deadline = time.monotonic() + timeout
    nodes, sizes, asked = {}, [0] * count, set()
    while len(nodes) < count:
        new = [i for i in grid.get_node_ids() if i not in asked]
        if not new:
            if time.monotonic() > deadline:
                raise FederationFailed(f"only {len(nodes)} of {count} Flower nodes answered within {timeout:.0f}s")
            time.sleep(0.1)
            continue
        asked.update(new)
        query = [Message(RecordDict({"config": ConfigRecord()}), dst_node_id=i, message_type=MessageType.QUERY)
                 for i in new]
        for reply in grid.send_and_receive(query, timeout=max(1.0, deadline - time.monotonic())):
            if reply.has_error():
                reason = reply.error.reason.strip().splitlines()[-1][:300]
                raise FederationFailed(f"a Flower node failed to start ({reason})")
            answer = reply.content["client"]
            nodes[int(answer["partition-id"])] = reply.metadata.src_node_id
            sizes[int(answer["partition-id"])] = int(answer[EXAMPLES_KEY])
    return nodes, sizes


def central_evaluation(federation: Federation, record: RunRecord, history: list[dict]):
    """Flower's ``evaluate_fn``: the global model on the test split after every round, as our loop
    does; each record is appended to ``history`` and written to the run's record at once."""
    model, test, clock = federation.model(), federation.split(train=False), [time.perf_counter()]

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        result = evaluate(model, *test)
        now = time.perf_counter()
        history.append({"round": server_round, **result, "seconds": 0.0 if server_round == 0 else now - clock[0]})
        clock[0] = now
        record.write_history(history)
        if not math.isfinite(result["loss"]):
            raise FedAvgDiverged(server_round, history[:-1], f"the test loss is {result['loss']}")
        return MetricRecord(result)

    return evaluate_fn


def curious_wrapper(strategy: Strategy, federation: Federation, config, defense: DefenseSetting | None = None,
                    always: bool = False) -> Strategy:
    """``strategy`` wrapped by a :class:`~soteria_lib.curious_strategy.CuriousStrategy` that runs
    the run config's ``attack`` (at the run's scale) in ``attack-rounds`` and tells it the clients
    use ``defense`` (default: the run config's); without an attack, ``strategy`` itself unless
    ``always`` (the wrapper then only records the updates)."""
    from .curious_strategy import CuriousStrategy

    if not config["attack"] and not always:
        return strategy
    experiment = federation.experiment
    info = dataset_info(experiment.dataset)
    curious = None
    if config["attack"]:
        rounds = {int(r) for r in str(config["attack-rounds"]).split(",") if r.strip()} or None
        curious = CuriousServer(config["attack"], scale=experiment.scale, rounds=rounds,
                                seed=experiment.training.seed)
    return CuriousStrategy(strategy, federation.model, curious, info.shape, info.normalization,
                           defense=experiment.setting() if defense is None else defense,
                           max_attacked=federation.max_attacked)


def serve(grid: Grid, context: Context) -> None:
    """The federation app's ServerApp: the run config's federation for its rounds, written to the
    run's record (:class:`~soteria_lib.flower_run.RunRecord`) as it goes."""
    torch.set_num_threads(1)  # as in every client: the same kernels, so the same bits
    config = context.run_config
    federation = Federation.from_run_config(config)
    record = RunRecord.for_run(context, engine=f"flwr {flwr.__version__}")
    experiment = federation.experiment
    nodes, sizes = wait_for_nodes(grid, experiment.training.clients)
    strategy = curious_wrapper(LibraryFedAvg(federation, nodes, sizes), federation, config)
    history: list[dict] = []
    seed_everything(experiment.training.seed)
    initial = ArrayRecord(federation.model().state_dict())
    strategy.start(grid, initial, num_rounds=experiment.training.rounds, timeout=TIMEOUT,
                   train_config=ConfigRecord({LR_KEY: experiment.training.lr}),
                   evaluate_fn=central_evaluation(federation, record, history))
    record.finish(history, strategy, train_examples=len(federation.split(train=True)[1]))
