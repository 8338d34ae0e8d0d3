"""The network edge: everything that speaks aiohttp or grpc.aio.

The REST and gRPC front doors, the admin listener, the upstream clients, event sinks,
metrics and logs. The request logic they run lives in `gateway.pipeline` and the pure
packages below it; nothing outside this package imports it except the commands.
"""
