"""LayerBridge: decompose a flat image into editable RGBA layers with Qwen-Image-Layered.

Packages, lowest first; a package imports only from those before it:
core (settings, errors, job objects, protocol constants) → imaging (pixels, restoration, export) →
text (reading text: lines, words, size, colour, font) → model (the pipeline, its memory plan, captioning and
naming, CFG split over two ranks) → cluster (model replicas through Ray Serve; Ray imported only with --cluster) →
server (the aiohttp app, the job queue) →
launcher (supervisor, tray; starts the server as a command, imports none of it) → cli (the `layerbridge` command).
"""

__version__ = "0.1.0"
