//! The `tcpnet` command.
#![forbid(unsafe_code)]

fn main() {}
