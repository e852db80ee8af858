//! See fuzz/README.md and `tcpnet::fuzzing::hello`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tcpnet::fuzzing::hello(data));
