"""The fedrank wire contract: topics, message models, the tensor codec and the bus."""

SCHEMA_VERSION = 2
