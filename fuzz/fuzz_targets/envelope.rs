//! See fuzz/README.md and `tcpnet::fuzzing::envelope`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tcpnet::fuzzing::envelope(data));
