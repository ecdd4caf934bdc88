//! Per-kernel timing for `cnnc bench --profile`: a routine compiled with
//! profiling calls `cnnc_mark(i)` before kernel `i` (and once more at its
//! end), and the marks become the time each kernel took.

use std::cell::RefCell;
use std::time::{Duration, Instant};

thread_local! {
    static MARKS: RefCell<Vec<(usize, Instant)>> = const { RefCell::new(Vec::new()) };
}

/// Called by profiled generated code.
pub extern "C" fn cnnc_mark(kernel: usize) {
    let now = Instant::now();
    MARKS.with(|m| m.borrow_mut().push((kernel, now)));
}

/// Time spent in each kernel since the last call, by kernel index
/// (`kernels` of them; the last index is the copies at the end).
pub fn take(kernels: usize) -> Vec<Duration> {
    let marks = MARKS.with(|m| std::mem::take(&mut *m.borrow_mut()));
    let mut total = vec![Duration::ZERO; kernels + 1];
    for w in marks.windows(2) {
        let ((k, t0), (_, t1)) = (w[0], w[1]);
        if k < total.len() {
            total[k] += t1.saturating_duration_since(t0);
        }
    }
    total
}
