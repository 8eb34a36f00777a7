"""What every other package builds on: settings, error codes, job parameters (and their presets and ranges) and results, the protocol's constants."""
