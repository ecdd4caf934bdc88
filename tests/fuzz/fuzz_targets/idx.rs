//! The IDX reader: the first byte says which file of a training split the
//! rest of the input is, the images or the labels; the other file is a
//! well-formed one of 6 images of 4x4. `tests/fuzz/run` runs it.

#![no_main]

mod scratch;

use cnnc::runtime::data;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const IMAGES: u32 = 6;

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, rest)) = input.split_first() else {
        return;
    };
    let pixels: Vec<u8> = (0..IMAGES as usize * 16).map(|i| (i * 7) as u8).collect();
    let labels: Vec<u8> = (0..IMAGES as u8).collect();
    let (images, labels) = if which % 2 == 0 {
        (rest.to_vec(), idx(0x0801, &[IMAGES], &labels))
    } else {
        (idx(0x0803, &[IMAGES, 4, 4], &pixels), rest.to_vec())
    };
    scratch::file("train-images-idx3-ubyte", &images);
    let path = scratch::file("train-labels-idx1-ubyte", &labels);
    let Some(dir) = path.parent().and_then(Path::to_str) else {
        return;
    };
    let _ = data::load(dir, Path::new("."), &[4, 4, 1], 10, None, &data::Selection::default());
});
