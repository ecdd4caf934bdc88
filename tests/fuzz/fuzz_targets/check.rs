//! The parser and checker: any text as a model file is accepted and
//! summarized, or refused with at least one error. `tests/fuzz/run` (from
//! the repository root) runs this target and the readers' for a bounded
//! time, as CI does.

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
