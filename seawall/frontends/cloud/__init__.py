"""The cloud routes over the HTTP server: `routes` (the shared route table and its error layer), `sagemaker`
with `sagemaker_mme`, and `vertex`. Imports `frontends.http` (server, codec, routes) and the core facade."""
