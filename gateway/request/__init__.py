"""Pure facts about one request: its body, its client, its tenant, its context, its problems.

Nothing here imports aiohttp or grpc or reads files at import time (tests/test_layering.py).
"""
