"""A curious server around any Flower strategy (chapter 9): it records what every client sends in
every round, reads each update as the gradient the attacks need, and may attack it.

:class:`CuriousStrategy` wraps a strategy (Flower's ``FedAvg``, a DP wrapper, the library's
:class:`~soteria_lib.flower.LibraryFedAvg`, ...) and changes nothing it does: the wrapped strategy
chooses the clients, configures them and aggregates their replies. In between, the wrapper keeps,
for each client of a round, the weights ``w`` and learning rate ``eta`` the server sent and, from
the reply, the returned weights ``w_k``, the number of examples and of local steps ``s``, and
records the update as a gradient, (eq-update-gradient) of chapter 9:

    g_hat = (w - w_k) / (eta s).

With a :class:`~soteria_lib.curious_server.CuriousServer` it runs that server's attack on every
update of at most ``max_attacked`` examples, in the rounds the server watches. It sees only what
the server receives; the clients' data enter nowhere (scores come later, from
:func:`~soteria_lib.curious_server.score`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

from .curious_server import CuriousServer, update_as_gradient
from .data import Normalization
from .defenses import DefenseSetting
from .flower_mods import EXAMPLES_KEY, LR_KEY, STEPS_KEY  # before flwr: where it is missing, one line says so
from .threat import Gradients

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


@dataclass
class ClientUpdate:
    """One client's update in one round, as the server received it. ``client`` is the
    ``partition-id`` the client reported (None when it reported none), ``node`` its Flower node."""

    round: int
    node: int
    client: int | None
    examples: int
    steps: int
    gradients: Gradients


class CuriousStrategy(Strategy):
    """``strategy`` with a curious server in the middle; ``model()`` builds the model the
    federation trains. ``updates`` holds every recorded :class:`ClientUpdate`; with ``curious``,
    its ``observations`` hold what the attack rebuilt (``input_shape`` and ``normalization`` are
    the data's, as the attacks need; ``defense`` is the defense and settings the server is told)."""

    def __init__(self, strategy: Strategy, model: Callable[[], nn.Module], curious: CuriousServer | None = None,
                 input_shape: tuple[int, ...] | None = None, normalization: Normalization | None = None,
                 defense: DefenseSetting | None = None, max_attacked: int = 8):
        if curious is not None and (input_shape is None or normalization is None):
            raise ValueError("a curious server that attacks needs the data's input_shape and normalization")
        self.strategy, self.model, self.curious = strategy, model, curious
        self.input_shape, self.normalization, self.defense, self.max_attacked = (
            input_shape, normalization, defense, max_attacked)
        self.updates: list[ClientUpdate] = []
        self._sent: dict[int, tuple[ArrayRecord, float]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        self._sent = {}
        for message in messages:
            [sent] = message.content.array_records.values()
            [sent_config] = message.content.config_records.values()
            if LR_KEY not in sent_config:
                raise ValueError(f"CuriousStrategy: the train messages declare no {LR_KEY!r}; send it in the "
                                 "train config (strategy.start(..., train_config=ConfigRecord({'lr': ...})))")
            self._sent[message.metadata.dst_node_id] = (sent, float(sent_config[LR_KEY]))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                self._record(server_round, reply)
        return self.strategy.aggregate_train(server_round, replies)

    def _record(self, server_round: int, reply: Message) -> None:
        node = reply.metadata.src_node_id
        sent, lr = self._sent[node]
        [returned] = reply.content.array_records.values()
        [metrics] = reply.content.metric_records.values()
        steps, examples = int(metrics.get(STEPS_KEY, 0)), int(metrics[EXAMPLES_KEY])
        if steps < 1:
            raise ValueError(f"CuriousStrategy: node {node} reported no {STEPS_KEY!r} in its reply's metrics")
        client = int(metrics["partition-id"]) if "partition-id" in metrics else None
        model, state = self.model(), returned.to_torch_state_dict()
        model.load_state_dict(sent.to_torch_state_dict())
        self.updates.append(ClientUpdate(server_round, node, client, examples, steps,
                                         update_as_gradient(model, state, lr, steps)))
        if self.curious is not None and self.curious.watches(server_round) and examples <= self.max_attacked:
            self.curious.observe(server_round, node if client is None else client, model, state, lr, steps,
                                 examples, self.input_shape, self.normalization, self.defense)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.strategy.summary()
