//! A `cnnc serve` child process on a free port, and an HTTP client for it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};

pub const MODEL: &str = "models/do_the_math.cnn";
pub const WEIGHTS: &str = "tests/fixtures/keras/do_the_math_keras.safetensors";

pub struct Server {
    /// None once stopped.
    child: Option<Child>,
    /// The address it printed, ending in `/`.
    pub url: String,
    /// What it printed before the address.
    pub banner: String,
    /// Its log (stderr), read as it comes so that the pipe never fills.
    log: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Server {
    /// Starts `cnnc serve MODEL --weights WEIGHTS --port 0 EXTRA...` and
    /// waits for the address it prints once it listens.
    pub fn start(extra: &[&str]) -> Server {
        Server::with_weights(WEIGHTS, extra)
    }

    pub fn with_weights(weights: &str, extra: &[&str]) -> Server {
        let mut args = vec![MODEL, "--weights", weights];
        args.extend(extra);
        Server::serving(&args)
    }

    /// Starts `cnnc serve ARGS... --port 0`.
    pub fn serving(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cnnc runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut banner = String::new();
        stdout.read_line(&mut banner).expect("readable stdout");
        let url = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {banner:?}"))
            .to_string();
        let mut stderr = child.stderr.take().expect("piped");
        let log = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            all
        });
        // Keep the pipe open: its end is read when the server stops.
        child.stdout = Some(stdout.into_inner());
        Server {
            child: Some(child),
            url,
            banner,
            log: Some(log),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        answer(ureq::get(&format!("{}{path}", self.url)).call())
    }

    pub fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        answer(ureq::post(&format!("{}{path}", self.url)).send_bytes(body))
    }

    /// Sends SIGINT and waits: what it printed, and how it ended.
    pub fn interrupt(mut self) -> Output {
        let child = self.child.take().expect("running");
        let pid = child.id().to_string();
        let kill = Command::new("kill")
            .args(["-s", "INT", &pid])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let mut output = child.wait_with_output().expect("the server ends");
        output.stderr = self.log.take().and_then(|l| l.join().ok()).unwrap_or_default();
        output
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(r) => (r.status(), r.into_string().expect("a text body")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().expect("a text body")),
        Err(e) => panic!("no answer: {e}"),
    }
}

/// A JSON body's `error`, asserting the status.
pub fn refusal((status, body): (u16, String), want: u16) -> String {
    assert_eq!(status, want, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

/// Float32 values of a JSON array.
pub fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}
