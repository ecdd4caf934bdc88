//! The `.npy` reader (predict's batches, show's inputs): any bytes as a
//! `.npy` file. `tests/fuzz/run` runs it.

#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::file("x.npy", data);
    let _ = cnnc::runtime::npy::read_f32(&path);
});
