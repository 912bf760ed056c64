"""The library's FedAvg as a Flower App (see soteria_lib.flower)."""
