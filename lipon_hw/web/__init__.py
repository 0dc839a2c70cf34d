"""The operator's web view: `lipon-hw serve`, a server over the store and the lifecycle.

`security` (who may do what: tokens, roles, the loopback rule), `app` (`create_app`),
`runs` (the REST API over the store), `server` (binding, `serve.json`, uvicorn). Needs the
`[web]` extra (FastAPI, uvicorn, websockets); nothing under `lipon_hw.engine` imports it.
"""
