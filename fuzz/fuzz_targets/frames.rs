//! See fuzz/README.md and `tcpnet::fuzzing::frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tcpnet::fuzzing::frames(data));
