//! Fuzz target `vpcd_framing`: see `cardvault_fuzz::vpcd` (fuzz/src/vpcd.rs) for
//! the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::vpcd::fuzz_vpcd_framing(data));
