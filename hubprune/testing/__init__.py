"""Test support that runs for real: a local Hub-compatible server (`hub_server.LocalHub`)."""
