"""The gateway's configuration: the model of `gateway.yaml` (`model`), its loader (`loader`),
the reference table in docs/configuration.md (`reference`) and the committed JSON Schemas
(`schemas`)."""
