"""Team scale: model replicas on many GPUs and machines through Ray Serve (the optional `cluster` extra; Ray imported only with --cluster)."""
