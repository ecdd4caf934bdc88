//! The image decoder (image folders, predict, serve's request bodies): any
//! bytes as a PNG or JPEG for a 4x4 grey input. `tests/fuzz/run` runs it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let _ = cnnc::runtime::data::image(data, Path::new("fuzz.png"), &[4, 4, 1]);
});
