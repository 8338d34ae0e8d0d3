"""Witnesses for the audit log's checkpoints (I/O edge; the protocol logic is pure and
lives in gateway.audit.witness).

`server`: `jurisgate witness serve`, a standalone C2SP `tlog-witness`. `client`: the
gateway's background submitter, which sends each new checkpoint with a consistency proof
to the configured witnesses, stores their cosignatures beside the notes and raises an
alarm when one refuses.
"""
