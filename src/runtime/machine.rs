//! The machine a figure was measured on: machines of this project's kind
//! differ (AVX-512 on some, AVX2 only on others, different clocks), so a
//! time means little without the CPU and the vector width beside it.

use crate::codegen::emit::LANES;
use std::fmt;

pub struct Machine {
    /// The CPU's model name as the operating system reports it.
    pub cpu: String,
    /// The widest f32 vectors the GEMM library dispatches to at run time.
    pub gemm_vector: &'static str,
    pub gemm_lanes: usize,
    pub threads: usize,
}

impl Machine {
    pub fn this() -> Machine {
        let (gemm_vector, gemm_lanes) = widest_vector();
        Machine {
            cpu: cpu_name().unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH)),
            gemm_vector,
            gemm_lanes,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}, {} threads; GEMM: {} ({} f32 lanes); generated loops: {LANES} f32 lanes",
            self.cpu, self.threads, self.gemm_vector, self.gemm_lanes
        )
    }
}

fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    let name = line.split_once(':')?.1.split_whitespace().collect::<Vec<_>>().join(" ");
    (!name.is_empty()).then_some(name)
}

#[cfg(target_arch = "x86_64")]
fn widest_vector() -> (&'static str, usize) {
    if std::arch::is_x86_feature_detected!("avx512f") {
        ("AVX-512", 16)
    } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        ("AVX2 with FMA", 8)
    } else if std::arch::is_x86_feature_detected!("avx") {
        ("AVX", 8)
    } else {
        ("SSE2", 4)
    }
}

#[cfg(target_arch = "aarch64")]
fn widest_vector() -> (&'static str, usize) {
    ("NEON", 4)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn widest_vector() -> (&'static str, usize) {
    ("scalar", 1)
}
