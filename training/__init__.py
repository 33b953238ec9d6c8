"""The training job: read events, fit models, evaluate them and write artifacts."""
