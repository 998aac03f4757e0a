"""HTTP only: one module per API style, the admin API, the console, health and
/openapi.json; `routing.py` puts their routes together."""
