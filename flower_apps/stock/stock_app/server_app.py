"""A Flower user's ServerApp: Flower's own FedAvg (its own client sampling and weighted average),
wrapped, for central differential privacy, in Flower's DifferentialPrivacyClientSideFixedClipping,
and in any case in the library's curious server (soteria_lib.curious_strategy.CuriousStrategy),
which records every client update of every round and runs the run config's attack on it."""
# soteria_lib first: importing it turns telemetry off before Flower is imported
from soteria_lib.flower import Federation, central_evaluation, curious_wrapper
from soteria_lib.flower_run import RunRecord

import flwr
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    torch.set_num_threads(1)  # the attacks run here: one thread, as in every client, contends least
    config = context.run_config
    federation = Federation.from_run_config(config)
    training = federation.experiment.training
    record = RunRecord.for_run(context, engine=f"flwr {flwr.__version__}")
    strategy = FedAvg(fraction_train=training.fraction, fraction_evaluate=0.0, min_train_nodes=1,
                      min_available_nodes=training.clients)
    if config["privacy"] == "flower-central-dp":
        sampled = max(1, round(training.fraction * training.clients))
        strategy = DifferentialPrivacyClientSideFixedClipping(strategy, float(config["dp-noise-multiplier"]),
                                                              float(config["dp-clipping-norm"]), sampled)
    told = federation.experiment.setting() if config["privacy"] == "library" else None  # what the clients declare
    strategy = curious_wrapper(strategy, federation, config, defense=told, always=True)
    torch.manual_seed(training.seed)
    history: list[dict] = []
    strategy.start(grid, ArrayRecord(federation.model().state_dict()), num_rounds=training.rounds,
                   train_config=ConfigRecord({"lr": training.lr}),
                   evaluate_fn=central_evaluation(federation, record, history))
    record.finish(history, strategy)
