"""Any registered defense as a Flower client mod, for a ClientApp that knows nothing of this
library (chapter 9, "Soteria in your own Flower app").

A Flower mod wraps a ClientApp: it sees the message the server sent and the reply the app
returns, and may change the reply before it leaves the node. A FedAvg client replies with its
weights after local training, not a gradient, so :func:`defense_mod` acts on the *shared update*.
With ``w`` the weights the server sent, ``w_k`` the weights the app returned after ``s`` steps of
SGD with learning rate ``eta`` (``s`` and ``eta`` as declared in the messages), it reads the update
as a gradient (:func:`~soteria_lib.curious_server.update_as_gradient`) and sends back

    g_hat = (w - w_k) / (eta s),        w_k' = w - eta s D(g_hat),

where ``D`` is the library's defense evaluated at the global weights ``w`` on the node's own
examples (``data``; Soteria scores them, DP-SGD clips their per-example gradients). A curious
server therefore reads off exactly ``D(g_hat)``, up to the float32 rounding of the two
subtractions, and the entries ``D`` sets to zero arrive as exact zeros. What this guarantees:

* one local step on one batch (federated SGD, the setting of DLG, GS and the paper), with
  ``data`` returning that batch: ``g_hat`` is the batch gradient, so the shared update is the
  library's defense of the gradient, the update :func:`~soteria_lib.threat.share_update` shares;
* several steps: the defense acts once, on the mean update that leaves the node. Training itself
  is undefended, so the model trains as without the defense, unlike chapter 6's clients, which
  defend every step; what leaves the node is defended all the same.

:func:`build_defense` is the one place a Flower client builds a defense from its name and
settings; :func:`privacy_mod` chooses, from the run config, this mod or Flower's own
client-side differential privacy (``LocalDpMod``, ``fixedclipping_mod``) for comparison.

Needs the extra: ``pip install 'soteria-lib[flower]'``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .curious_server import update_as_gradient
from .defenses import Defense, DefenseSetting, from_flags

FLOWER_MISSING = "the Flower federation needs Flower: pip install 'soteria-lib[flower]'"


class FlowerMissing(ImportError):
    """The Flower federation was asked for where Flower is not installed."""


try:
    from flwr.app import ArrayRecord, Context, Message, MessageType
    from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod
except ImportError:
    raise FlowerMissing(FLOWER_MISSING) from None

Data = Callable[[Context], tuple[torch.Tensor, torch.Tensor]]
# What a Flower client declares, and this library's apps send: the learning rate in the train
# message's ConfigRecord, the number of local steps and examples in the reply's MetricRecord.
LR_KEY, STEPS_KEY, EXAMPLES_KEY = "lr", "num-steps", "num-examples"
PRIVACY = ("none", "library", "flower-local-dp", "flower-central-dp")


def build_defense(name: str, settings: dict, seed: int) -> Defense:
    """The registered defense ``name`` with ``settings``, given as the command lines' flags
    (``{"pruning_rate": 60.0}``, ``{"noise": 0.1, "clip": 1.0}``; :func:`~soteria_lib.defenses.from_flags`);
    a seeded defense draws from ``seed + 1``. Every Flower client of the library builds its defense here."""
    return DefenseSetting.of(name, **from_flags(name, **settings)).build(seed)


def client_seed(seed: int, round_index: int, client: int) -> int:
    """A seed of (run, round, client): each client draws its own noise in every round."""
    return (seed * 1_000_003 + round_index * 7_919 + client * 104_729) % 2**32


def defend_update(model: nn.Module, returned: dict, lr: float, steps: int, defense: Defense,
                  inputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """The weights to send instead of ``returned``: ``w - lr steps D((w - w_k) / (lr steps))``
    for every parameter of ``model`` (which holds the global weights ``w``); buffers as returned."""
    model.train()
    defended = defense(model, inputs, labels, update_as_gradient(model, returned, lr, steps))
    weights = {name: (p.detach() - (lr * steps) * d).to(returned[name].dtype)
               for (name, p), d in zip(model.named_parameters(), defended)}
    return {key: weights.get(key, value) for key, value in returned.items()}


def _single(records: dict, kind: str, where: str):
    if len(records) != 1:
        raise ValueError(f"defense_mod: the {where} holds {len(records)} {kind}s; it needs exactly one")
    return next(iter(records.items()))


def _declared(record, key: str, where: str, hint: str):
    if key not in record:
        raise ValueError(f"defense_mod: the {where} has no {key!r} ({hint})")
    return record[key]


def defense_mod(defense: str, model: Callable[[], nn.Module], data: Data, settings: dict | None = None,
                seed: int = 0):
    """A client mod that applies the registered ``defense`` (with ``settings``) to the update a
    ClientApp shares, for ``ClientApp(mods=[defense_mod(...)])``.

    ``model()`` builds the app's model (the weights come from the message) and ``data(context)``
    returns the node's examples ``(inputs, labels)`` in the model's input space. The train message
    must declare the learning rate (``"lr"`` in its ConfigRecord) and the reply the number of
    local steps (``"num-steps"`` in its MetricRecord). Bad settings are refused here, at once."""
    settings = dict(settings or {})
    build_defense(defense, settings, seed)

    def mod(message: Message, context: Context, call_next) -> Message:
        if message.metadata.message_type.split(".")[0] != MessageType.TRAIN:  # "train" or "train.<action>"
            return call_next(message, context)
        _, sent = _single(message.content.array_records, "ArrayRecord", "train message")
        _, config = _single(message.content.config_records, "ConfigRecord", "train message")
        lr = float(_declared(config, LR_KEY, "train message's ConfigRecord", "the server sets the learning rate"))
        reply = call_next(message, context)
        if reply.has_error():
            return reply
        key, returned = _single(reply.content.array_records, "ArrayRecord", "reply")
        _, metrics = _single(reply.content.metric_records, "MetricRecord", "reply")
        steps = int(_declared(metrics, STEPS_KEY, "reply's MetricRecord", "the app reports its local steps"))
        net = model()
        net.load_state_dict(sent.to_torch_state_dict())
        round_index = int(config.get("server-round", 0))
        chosen = build_defense(defense, settings, client_seed(seed, round_index, context.node_id))
        inputs, labels = data(context)
        reply.content[key] = ArrayRecord(defend_update(net, returned.to_torch_state_dict(), lr, steps, chosen,
                                                       inputs, labels))
        return reply

    return mod


def privacy_mod(model: Callable[[Context], nn.Module], data: Data, settings: Callable[[dict], tuple[str, dict]]):
    """One mod that applies what the run config's ``privacy`` names: ``none``; ``library``, the
    library defense ``settings(run_config)`` returns ``(name, settings)`` for, as
    :func:`defense_mod` (``model(context)`` builds the run's model); ``flower-local-dp``, Flower's
    ``LocalDpMod`` (clip the update to ``dp-clipping-norm``, add Gaussian noise for
    ``(dp-epsilon, dp-delta)``, sensitivity the clipping norm); ``flower-central-dp``, Flower's
    ``fixedclipping_mod`` (clip only; the server's ``DifferentialPrivacyClientSideFixedClipping``
    adds the noise to the aggregate)."""

    def mod(message: Message, context: Context, call_next) -> Message:
        config = context.run_config
        privacy = config["privacy"]
        if privacy == "library":
            name, chosen = settings(config)
            inner = defense_mod(name, lambda: model(context), data, chosen, seed=int(config["seed"]))
        elif privacy == "flower-local-dp":
            norm = float(config["dp-clipping-norm"])
            inner = LocalDpMod(norm, norm, float(config["dp-epsilon"]), float(config["dp-delta"]))
        elif privacy == "flower-central-dp":
            inner = fixedclipping_mod
        elif privacy == "none":
            return call_next(message, context)
        else:
            raise ValueError(f"unknown privacy {privacy!r}; choose one of {list(PRIVACY)}")
        return inner(message, context, call_next)

    return mod
