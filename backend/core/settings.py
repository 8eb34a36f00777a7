"""Every server setting, typed and described once; paths from platformdirs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import platformdirs

from .options import DEFAULT_PRESET, PRESETS

APP_NAME = "layerbridge"
DEFAULT_MODEL = "Qwen/Qwen-Image-Layered"
DEFAULT_PORT = 7860
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# the values of --memory: auto, or one of memory.MemoryMode's
MEMORY_CHOICES = ("auto", "gpu", "model_offload", "host_offload", "group_offload", "sequential_offload", "cpu")
# --cluster: a Ray instance started here, or the address of a Ray cluster to join (docs/team-server.md)
CLUSTER_LOCAL = "local"
CLUSTER_AUTO = "auto"


def config_dir() -> Path:
    """Where the token and settings live (env LAYERBRIDGE_CONFIG_DIR overrides)."""
    override = os.environ.get("LAYERBRIDGE_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def log_dir() -> Path:
    override = os.environ.get("LAYERBRIDGE_LOG_DIR")
    return Path(override) if override else Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    override = os.environ.get("LAYERBRIDGE_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


@dataclass
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "interface to listen on; anything but loopback is announced loudly"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "TCP port (0 picks a free one)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Hugging Face model id or a local pipeline folder"})
    memory: str = field(default="auto", metadata={"help": "memory mode: " + ", ".join(MEMORY_CHOICES)})
    preset: str = field(default=DEFAULT_PRESET, metadata={"help": "default quality preset: " + ", ".join(PRESETS)})
    quantize: str = field(default="auto", metadata={"help": "quantised weights: auto (where the bf16 transformer does not fit: FP8 on cards with FP8 units, int8 weights on others; an int8 text encoder where the model is streamed), none, fp8, int8"})
    compile: str = field(default="auto", metadata={"help": "regional torch.compile of the transformer: auto (on CUDA), on, off"})
    attention: str = field(default="auto", metadata={"help": "attention backend: auto (flash-attn 3, then 2, where installed; else PyTorch SDPA), or a diffusers backend name such as native, _native_cudnn, flash, _flash_3, sage"})
    transformer_file: str | None = field(default=None, metadata={"help": "a single-file transformer (FP8 .safetensors or .gguf; a path, or a https://huggingface.co/…/blob/… file address) used instead of the model's own, whose weights are then not downloaded"})
    max_pixels: int = field(default=100_000_000, metadata={"help": "largest image accepted, in pixels"})
    max_upload_mb: int = field(default=512, metadata={"help": "largest request body or announced upload, in MiB"})
    max_queue: int = field(default=32, metadata={"help": "jobs waiting at most; more are refused with queue_full"})
    result_ttl_s: int = field(default=3600, metadata={"help": "seconds a finished job's result stays fetchable"})
    max_results: int = field(default=16, metadata={"help": "finished jobs kept at most (the oldest go first), bounding memory"})
    max_results_mb: int = field(default=8192, metadata={"help": "MiB of finished jobs' layers kept at most (the oldest go first; the newest is always kept): a 100-megapixel result of 10 layers takes up to 4 GiB"})
    max_uploads_mb: int = field(default=1024, metadata={"help": "MiB that WebSocket uploads in progress may hold over all connections together (reserved as their bytes arrive)"})
    max_connections: int = field(default=1000, metadata={"help": "open connections at most (lowered to the open-files limit less 384); when full, the longest idle connection that has not shown the token is closed first"})
    header_timeout_s: float = field(default=10.0, metadata={"help": "seconds a new connection has to send a whole request header (and a WebSocket to show the token)"})
    idle_timeout_s: float = field(default=60.0, metadata={"help": "seconds a connection may stay idle between requests"})
    allowed_origins: list[str] = field(default_factory=list, metadata={"help": "extra allowed Origin values"})
    allowed_hosts: list[str] = field(default_factory=list, metadata={"help": "extra allowed Host names (for a LAN server)"})
    preload: bool = field(default=False, metadata={"help": "load the model at start instead of at the first job"})
    port_file: str | None = field(default=None, metadata={"help": "write the bound port to this file once listening"})
    cluster: str | None = field(default=None, metadata={"help": "run jobs on model replicas through Ray Serve (the optional extra: pip install -e \".[cluster]\"): local (a Ray instance started here), auto (the Ray cluster this machine joined with `ray start`), or ray://HEAD:10001; unset: the model runs in this process (docs/team-server.md)"})
    replicas: int = field(default=0, metadata={"help": "model replicas with --cluster, one per GPU (each plans its memory for its own GPU); 0: one per GPU the cluster has, or one on a cluster without GPUs (CPU replicas)"})
    cfg_parallel: bool = field(default=False, metadata={"help": "split each CFG step over two GPUs (a second process on the next GPU, torch.distributed): the conditional and unconditional passes side by side, the same latents; pays for presets with CFG (docs/team-server.md)"})

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def max_uploads_bytes(self) -> int:
        return self.max_uploads_mb * 1024 * 1024

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster)

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
