//! Fuzz target `restore_records`: see `cardvault_fuzz::restore` (fuzz/src/restore.rs) for
//! the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::restore::fuzz_restore_records(data));
