"""The transports over the core facade: `http/`, `grpc/`, `cloud/` (SageMaker, Vertex AI), `metrics`, and
`status` (the one Code → HTTP/gRPC table). `seawall.listeners` lists them for the composition root."""
