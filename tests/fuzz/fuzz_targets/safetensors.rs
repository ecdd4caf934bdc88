//! The weights reader: any bytes as a safetensors file of a two-tensor
//! model. `tests/fuzz/run` runs it.

#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::file("w.safetensors", data);
    let expected: [(&str, &[usize]); 2] = [("dense/kernel", &[4, 2]), ("dense/bias", &[2])];
    let _ = cnnc::runtime::checkpoint::inspect(&path, &expected);
});
