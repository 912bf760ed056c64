"""The federation's ServerApp: Flower's FedAvg with the library's client sampling, batch order and
averaging order, central evaluation after every round, an optional curious server
(:func:`soteria_lib.flower.serve`)."""
# soteria_lib first: importing it turns telemetry off before Flower is imported
from soteria_lib.flower import serve

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    serve(grid, context)
