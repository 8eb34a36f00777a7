"""The model: loading it into the memory the machine has, running a job on it, captioning and naming, weights on disk."""
