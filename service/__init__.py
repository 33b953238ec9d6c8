"""The personalisation service: HTTP API, model serving and customer state."""
