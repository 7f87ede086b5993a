"""The admin console: a small aiohttp web application over the control plane's admin API.

It runs behind a service-host node as the fabric service ``admin-console`` (any number of
replicas, active-active); operators reach it through an entry node's HTTP ingress.
ADR 0023 says why server-rendered pages and a little vanilla JavaScript; docs/console.md
how to deploy it and its security model.
"""
