"""The engine's core, free of I/O: events, config, rules, streams, engine, alerts and sinks."""
