"""The control plane's HTTP/JSON API (aiohttp): handlers, authentication, OpenAPI schema."""
