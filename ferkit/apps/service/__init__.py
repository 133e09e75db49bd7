"""HTTP service: ``app`` (FastAPI routes and the web page in ``static/``), ``upload`` (body
validation), ``limits`` (admission and timeouts) and ``netguard`` (connection-level guards)."""
