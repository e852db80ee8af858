//! The gateway nodes as a cluster: what they tell each other over tcpnet
//! ([`wire`]), the cluster state each one keeps ([`view`], pure), the task
//! that keeps it in sync (`sync`) and the one that serves the other
//! nodes' requests (`inbox`).

pub(crate) mod inbox;
pub(crate) mod sync;
pub mod view;
pub mod wire;
