//! Large elementwise loops split across the machine's cores: the generated
//! code calls `cnnc_parallel` with a function that runs one range of the
//! loop's outermost axis, and the ranges run on rayon's pool (the one the
//! GEMM uses too).

/// A chunk of a loop: the routine's pointer table and hyperparameters, and
/// the range [start, end) of the outermost axis to run.
pub type Chunk = unsafe extern "C" fn(*const *mut f32, *const f32, i64, i64);

/// The routine's buffers, shared by the chunks of one loop.
#[derive(Clone, Copy)]
struct Buffers(*const *mut f32, *const f32);

// SAFETY: the chunks of a loop write disjoint ranges of its outputs (each
// index is computed from the same index of its inputs), so sharing the
// pointers between the threads running them is sound.
unsafe impl Send for Buffers {}
unsafe impl Sync for Buffers {}

/// Runs `chunk` over [0, n), split evenly across the pool's threads.
///
/// # Safety
/// `chunk` must be a generated loop whose chunks touch disjoint memory, and
/// `table` and `scalars` the routine's valid buffers.
pub unsafe extern "C" fn cnnc_parallel(chunk: Chunk, table: *const *mut f32, scalars: *const f32, n: i64) {
    let parts = (rayon::current_num_threads() as i64).clamp(1, n.max(1));
    let size = (n + parts - 1) / parts;
    let buffers = Buffers(table, scalars);
    rayon::scope(|s| {
        for p in 1..parts {
            s.spawn(move |_| {
                let b = buffers;
                // SAFETY: as for the caller; this chunk's range is its own.
                unsafe { chunk(b.0, b.1, p * size, ((p + 1) * size).min(n)) }
            });
        }
        let b = buffers;
        // SAFETY: as above; the calling thread takes the first range.
        unsafe { chunk(b.0, b.1, 0, size.min(n)) }
    });
}
