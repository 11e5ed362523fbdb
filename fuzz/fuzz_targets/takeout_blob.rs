//! Fuzz target `takeout_blob`: see `cardvault_fuzz::takeout` (fuzz/src/takeout.rs) for
//! the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::takeout::fuzz_takeout_blob(data));
