//! Fuzz target `apdu_dispatch`: see `cardvault_fuzz::dispatch` (fuzz/src/dispatch.rs) for
//! the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::dispatch::fuzz_apdu_dispatch(data));
