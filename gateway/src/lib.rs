//! tcpnet-gateway: a WebSocket cluster server on a tcpnet mesh.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
