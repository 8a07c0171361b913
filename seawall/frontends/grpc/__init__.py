"""The gRPC transport: `service` (the servicer, its RPC table and its error layer), `admin`, `codec`, `wire`,
`parameters` and `stream`. Imports the core facade, `frontends.status` and the security policy; never `http`."""
