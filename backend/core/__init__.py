"""What every other package builds on: settings, error codes, job parameters and results, the protocol's constants."""
