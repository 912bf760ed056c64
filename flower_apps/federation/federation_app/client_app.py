"""The federation's ClientApp: each node is one client of the library's split; it says which one
when the server asks, and runs the library's local SGD, with the run config's defense on every
step, when told to train (:mod:`soteria_lib.flower`)."""
# soteria_lib first: importing it turns telemetry off before Flower is imported
from soteria_lib.flower import describe_client, train_client

from flwr.clientapp import ClientApp

app = ClientApp()
app.query()(describe_client)
app.train()(train_client)
