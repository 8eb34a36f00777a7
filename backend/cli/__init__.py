"""The `layerbridge` command: its parser and commands, the decompose runner, the remote client, doctor."""
