//! `cnnc serve` under load on loopback: predictions per second and the
//! p50/p99 latency that clients see, for mnist_cnn, with a PNG body and
//! with the same pixels as JSON. `cargo bench --bench serve_load`
//! (`CLIENTS` and `SECONDS` in the environment change the load).
//!
//! It serves the model's initial weights: the time of a prediction does not
//! depend on their values.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "models/mnist_cnn.cnn";
const DIGIT: &str = "models/data/examples/digit_7.png";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']))
        .to_string();
    #[cfg(target_arch = "x86_64")]
    let width = if is_x86_feature_detected!("avx512f") {
        512
    } else if is_x86_feature_detected!("avx2") {
        256
    } else {
        128
    };
    #[cfg(not(target_arch = "x86_64"))]
    let width = 128;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores, {width}-bit vectors")
}

/// Runs `clients` keep-alive clients posting `body` for `seconds` (after a
/// second of warm-up): predictions per second, p50 and p99 in ms.
fn load(url: &str, body: &[u8], clients: usize, seconds: usize) -> (f64, f64, f64) {
    let measure = |for_how_long: Duration| {
        let started = Instant::now();
        let mut latencies: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    s.spawn(|| {
                        let agent = ureq::agent();
                        let mut mine = Vec::new();
                        while started.elapsed() < for_how_long {
                            let sent = Instant::now();
                            let answer = agent.post(&format!("{url}predict")).send_bytes(body);
                            assert_eq!(answer.map(|r| r.status()).ok(), Some(200));
                            mine.push(sent.elapsed().as_secs_f64() * 1e3);
                        }
                        mine
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("a client")).collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        (latencies.len() as f64 / elapsed, at(0.5), at(0.99))
    };
    measure(Duration::from_secs(1));
    measure(Duration::from_secs(seconds as u64))
}

fn main() {
    let clients = setting("CLIENTS", 4);
    let seconds = setting("SECONDS", 5);
    let mut server = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["serve", MODEL, "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cnnc runs");
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
        &mut banner,
    )
    .expect("the address");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address")
        .to_string();

    let png = std::fs::read(DIGIT).expect("the digit");
    let pixels = cnnc::runtime::data::images(&[DIGIT.into()], &[28, 28, 1]).expect("decodes");
    let json = serde_json::json!({ "input": pixels.iter().collect::<Vec<_>>() }).to_string();
    println!("cnnc serve {MODEL} on {}", cpu());
    println!("{clients} clients on loopback, {seconds} s each:");
    for (what, body) in [("PNG body", png.as_slice()), ("JSON body", json.as_bytes())] {
        let (rate, p50, p99) = load(&url, body, clients, seconds);
        println!("  {what:<9} {rate:>7.0} predictions/s   p50 {p50:.3} ms   p99 {p99:.3} ms");
    }
    let _ = server.kill();
    let _ = server.wait();
}
