"""The HTTP/1.1 transport: `server` (the listener) over `connection`/`reader`, `message`, `body`, `admission`;
`routes` (the KServe v2 route table and its error layer) with `extensions`; `codec` and `tensors` (JSON and binary
tensors). Imports the core facade, `frontends.status` and the security policy; never `grpc` or `cloud`."""
