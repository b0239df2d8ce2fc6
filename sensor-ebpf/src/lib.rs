// Kept empty on purpose: Cargo needs a library target so that `sensor` can name this crate as a
// build-dependency and be rebuilt when it changes. The program itself is `src/main.rs`.
#![no_std]
