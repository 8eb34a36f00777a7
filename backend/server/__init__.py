"""The local server: the aiohttp app, its HTTP routes and WebSocket connection, access rules, the job queue."""
