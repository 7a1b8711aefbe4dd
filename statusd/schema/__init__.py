"""The one schema of statusd's HTTP input and output (pydantic models, no I/O).

`rules` holds the limits every check shares (the ingest hot path's hand-written checker uses
them too); `types`, `bodies`, `queries` and the answers (`responses`, `reports`, `story`,
`batch_results`) are the models the handlers validate and serialize with and the OpenAPI
document is generated from (statusd.api.openapi); `bad_input` is the one place a pydantic
ValidationError becomes the API's JSON error codes.
"""
