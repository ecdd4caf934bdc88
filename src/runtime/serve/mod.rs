//! Serving a compiled model over HTTP (`cnnc serve`): a pool of workers,
//! each with its own compiled engine, takes requests from one tiny_http
//! queue; `api.rs` answers them, `page.html` is the live demo at `/`.
//!
//! tiny_http rather than axum on tokio: each request is a few hundred
//! microseconds of compiled code on a CPU core, so an async runtime would
//! only add threads; a synchronous worker per core, owning its engine (the
//! compiled routines keep per-batch-size buffers, so they are not shared),
//! serves without locks.

mod api;

pub use api::{Service, ranked};

use super::Error;
use crate::runtime::jit::Compiled;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response, Server};

/// Where and how to listen.
pub struct Options {
    pub host: String,
    pub port: u16,
    /// Workers, each with its own compiled engine.
    pub workers: usize,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

/// How often an idle worker looks whether it was asked to stop.
const POLL: Duration = Duration::from_millis(50);

/// What a server did before it stopped.
pub struct Served {
    pub requests: u64,
}

/// A running server: its address, and the flag that stops it.
pub struct Running {
    pub url: String,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    requests: Arc<AtomicU64>,
}

impl Running {
    /// The flag that, set, makes every worker finish its request and stop.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Waits until the workers stopped (the stopper was set).
    pub fn join(self) -> Served {
        for w in self.workers {
            // A worker's panic is caught per request, so join only fails
            // on a bug outside them; the other workers still stopped.
            let _ = w.join();
        }
        Served {
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// Binds, compiles the model once per worker (before the first request,
/// so no request waits for Cranelift) and starts serving.
pub fn start(service: Service, options: &Options) -> Result<Running, Error> {
    // An IPv6 address is bracketed, to bind and in the URL.
    let host = if options.host.contains(':') {
        format!("[{}]", options.host)
    } else {
        options.host.clone()
    };
    let address = format!("{host}:{}", options.port);
    let server = Server::http(&address).map_err(|e| Error::Message(format!("cannot listen on {address}: {e}")))?;
    let port = server.server_addr().to_ip().map_or(options.port, |a| a.port());
    let service = Arc::new(service);
    let server = Arc::new(server);
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(options.workers);
    for _ in 0..options.workers.max(1) {
        let mut engines = service.engines()?;
        let (server, service, stop, requests) = (
            Arc::clone(&server),
            Arc::clone(&service),
            Arc::clone(&stop),
            Arc::clone(&requests),
        );
        let max_body = options.max_body;
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(request)) = server.recv_timeout(POLL) {
                    respond(request, &service, &mut engines, max_body);
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    Ok(Running {
        url: format!("http://{host}:{port}/"),
        stop,
        workers,
        requests,
    })
}

/// A worker's engines, the plain routine and the one that taps every
/// layer, and its copy of the weights (the routines read them in place).
pub struct Engines {
    plain: Compiled,
    tapped: Compiled,
    weights: Vec<ndarray::ArrayD<f32>>,
}

/// An answer: its status, content type and body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// A refusal: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

fn respond(mut request: Request, service: &Service, engines: &mut Engines, max_body: usize) {
    let started = Instant::now();
    let method = request.method().clone();
    let url = request.url().to_string();
    let reply = match read_body(&mut request, max_body) {
        Ok(body) => {
            // A bug must cost one answer, not the worker.
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                route(&method, &url, &body, service, engines)
            }));
            answer.unwrap_or_else(|_| Reply::error(500, "the server failed on this request (a bug in cnnc)"))
        }
        Err(reply) => reply,
    };
    let (status, bytes) = (reply.status, reply.body.len());
    let header = Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes());
    let mut response = Response::from_data(reply.body).with_status_code(status);
    if let Ok(h) = header {
        response = response.with_header(h);
    }
    // The client may have gone; there is no one left to tell.
    let _ = request.respond(response);
    eprintln!(
        "{method} {url} {status} {bytes} B {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// The body, refused with 413 past `max` bytes (read no further).
fn read_body(request: &mut Request, max: usize) -> Result<Vec<u8>, Reply> {
    let too_large = || Reply::error(413, format!("the body is larger than the limit of {max} bytes"));
    if request.body_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Reply::error(400, format!("cannot read the body: {e}")))?;
    if body.len() > max {
        return Err(too_large());
    }
    Ok(body)
}

const PAGE: &str = include_str!("page.html");

fn route(method: &Method, url: &str, body: &[u8], service: &Service, engines: &mut Engines) -> Reply {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match (method, path) {
        (Method::Get, "/") => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: PAGE.as_bytes().to_vec(),
        },
        (Method::Get, "/health") => Reply::json(200, &serde_json::json!({ "status": "ok" })),
        (Method::Get, "/model") => Reply {
            status: 200,
            content_type: "application/json",
            body: service.summary.clone().into_bytes(),
        },
        (Method::Post, "/predict") => service.predict(body, query, engines),
        (_, "/" | "/health" | "/model" | "/predict") => {
            let allowed = if path == "/predict" { "POST" } else { "GET" };
            Reply::error(405, format!("{path} takes {allowed}, not {method}"))
        }
        _ => Reply::error(
            404,
            format!("no such endpoint `{path}`: the server has GET /, GET /model, GET /health and POST /predict"),
        ),
    }
}
