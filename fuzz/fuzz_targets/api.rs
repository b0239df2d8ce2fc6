//! libFuzzer entry for [`checks::api`]: see there for what is asserted.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::api(data));
