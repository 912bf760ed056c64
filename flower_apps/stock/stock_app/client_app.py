"""A Flower user's ClientApp: plain minibatch SGD on the node's examples, nothing of Soteria in
it. One mod, added at the end, protects what it shares: the library defense the run config names
(applied to the shared update, soteria_lib.flower_mods.defense_mod), or Flower's own LocalDpMod or
fixedclipping_mod, for comparison."""
# soteria_lib first: importing it turns telemetry off before Flower is imported
from soteria_lib.flower import Federation, client_data, defense_settings, node_partition
from soteria_lib.flower_mods import privacy_mod

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch.nn import functional as F


def model_for(context: Context) -> torch.nn.Module:
    return Federation.from_run_config(context.run_config).model()


def examples(context: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """This node's examples: its part of the federation's split (the federation app's)."""
    federation = Federation.from_run_config(context.run_config)
    return client_data(federation, node_partition(federation, context))


app = ClientApp(mods=[privacy_mod(model_for, examples, defense_settings)])


@app.train()
def train(message: Message, context: Context) -> Message:
    training = Federation.from_run_config(context.run_config).experiment.training
    net = model_for(context)
    net.load_state_dict(message.content["arrays"].to_torch_state_dict())
    inputs, labels = examples(context)
    partition, config = int(context.node_config["partition-id"]), message.content["config"]
    optimizer = torch.optim.SGD(net.parameters(), lr=float(config["lr"]))
    shuffle = torch.Generator().manual_seed(training.seed + 1000 * int(config["server-round"]) + partition)
    steps = 0
    for _ in range(training.local_epochs):
        for batch in torch.randperm(len(labels), generator=shuffle).split(training.batch_size):
            optimizer.zero_grad()
            F.cross_entropy(net(inputs[batch]), labels[batch]).backward()
            optimizer.step()
            steps += 1
    metrics = MetricRecord({"num-examples": len(labels), "num-steps": steps, "partition-id": partition})
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics}), reply_to=message)
