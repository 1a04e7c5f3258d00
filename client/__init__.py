"""The client side of the engine, shared by the command line and the intake: open a case,
send a command, start a rollout or a handoff, deliver an event, read state (Temporal client +
app database). No typer, no HTTP framework: worker/ and intake/ build on it."""
