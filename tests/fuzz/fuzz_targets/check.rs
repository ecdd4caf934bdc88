//! Run from the repository root:
//!
//!     RUSTC_BOOTSTRAP=1 cargo fuzz run check --fuzz-dir tests/fuzz -a -- -max_total_time=60
//!
//! (`-a` keeps overflow checks on; RUSTC_BOOTSTRAP=1 lets a stable toolchain
//! take the sanitizer flags cargo-fuzz passes.) A crash is saved under
//! tests/fuzz/artifacts/check/; add it to tests/bad or to tests/no_panic.rs
//! once fixed.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The CLI refuses text that is not UTF-8 before parsing.
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let name = "fuzz.cnn";
    match cnnc::parse::parse(name, source).and_then(|model| cnnc::shape::check(model, name, source)) {
        Ok(checked) => {
            let _ = cnnc::summary::text(&checked, None);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.errors.is_empty(), "refused without an error");
            let _ = diagnostics.render();
        }
    }
});
