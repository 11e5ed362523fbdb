//! Fuzz target `file_header`: see `cardvault_fuzz::file` (fuzz/src/file.rs) for
//! the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardvault_fuzz::file::fuzz_file_header(data));
