//! The API over real HTTP, against `cnnc predict`'s outputs.

use crate::common::{Scratch, cnnc, stderr, stdout};
use crate::server::{MODEL, Server, WEIGHTS, floats, refusal};
use cnnc::runtime::npy;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const DIGITS: [&str; 2] = ["models/data/examples/digit_7.png", "models/data/examples/digit_3.png"];

/// `cnnc predict`'s probabilities for each of `inputs`, and with `layer`,
/// that layer's outputs, one input at a time (as the server runs them: a
/// batch of another size is another compiled routine, whose sums may round
/// differently).
fn predicted(dir: &Scratch, inputs: &[&str], layer: Option<&str>) -> (Vec<Vec<f32>>, Vec<ndarray::ArrayD<f32>>) {
    let each: Vec<_> = inputs.iter().map(|i| predicted_one(dir, i, layer)).collect();
    let rows = each.iter().map(|(p, _)| p.clone()).collect();
    (rows, each.into_iter().filter_map(|(_, l)| l).collect())
}

fn predicted_one(dir: &Scratch, input: &str, layer: Option<&str>) -> (Vec<f32>, Option<ndarray::ArrayD<f32>>) {
    let out = dir.join("p.npy");
    let out_text = out.display().to_string();
    let (model, weights) = (absolute(MODEL), absolute(WEIGHTS));
    let mut args = vec!["predict", &model, "--weights", &weights, "--output", &out_text, input];
    if let Some(l) = layer {
        args.extend(["--layer", l]);
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(&args)
        .current_dir(dir.path())
        .output()
        .expect("cnnc runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = npy::read_f32(&out).expect("predict's output");
    let layer = layer.map(|l| npy::read_f32(&dir.join(format!("{l}.npy"))).expect("the layer's output"));
    (p.iter().copied().collect(), layer)
}

/// The repository's files, absolute, for a command run in a scratch folder.
fn absolute(path: &str) -> String {
    std::env::current_dir()
        .expect("a folder")
        .join(path)
        .display()
        .to_string()
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn health_model_and_page_answer_and_it_listens_on_loopback() {
    let server = Server::start(&[]);
    assert!(server.url.starts_with("http://127.0.0.1:"), "{}", server.banner);
    assert!(server.banner.contains("open it in a browser"), "{}", server.banner);
    assert_eq!(server.get("health"), (200, r#"{"status":"ok"}"#.to_string()));

    let (status, model) = server.get("model");
    assert_eq!(status, 200);
    let check = cnnc(&["check", MODEL, "--format", "json"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert_eq!(model, stdout(&check), "GET /model is `cnnc check --format json`");

    let (status, page) = server.get("");
    assert_eq!(status, 200);
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains("fetch(\"/predict\""), "the page calls the API");
    // Self-contained: nothing loaded from elsewhere.
    for outside in ["src=", "href=", "http://", "https://", "@import"] {
        assert!(!page.contains(outside), "the page loads {outside}");
    }
}

#[test]
fn an_image_and_its_values_as_json_both_give_predicts_probabilities() {
    let dir = Scratch::new("serve-equal");
    let digits: Vec<String> = DIGITS.iter().map(|d| absolute(d)).collect();
    let (expected, conv) = predicted(
        &dir,
        &digits.iter().map(String::as_str).collect::<Vec<_>>(),
        Some("conv2d"),
    );
    let server = Server::start(&[]);
    for (i, (digit, want)) in DIGITS.iter().zip(&expected).enumerate() {
        let (status, body) = server.post("predict", &std::fs::read(digit).expect("the digit"));
        assert_eq!(status, 200, "{body}");
        let answer = json(&body);
        assert_eq!(floats(&answer["probabilities"]), *want, "{digit}");
        let best = (0..10)
            .max_by(|&a, &b| want[a].total_cmp(&want[b]))
            .expect("ten classes");
        assert_eq!(answer["top"][0]["class"], json!(best));
        assert_eq!(answer["top"][0]["name"], json!(best.to_string()));
        assert_eq!(answer["top"].as_array().map(Vec::len), Some(5));
        assert!(answer.get("layers").is_none(), "layers only when asked");

        // The same pixels as JSON, with layers asked in the body and the query.
        let pixels = cnnc::runtime::data::images(&[digit.into()], &[28, 28, 1]).expect("decodes");
        let request = json!({ "input": pixels.iter().collect::<Vec<_>>(), "layers": ["conv2d"] });
        let (status, body) = server.post("predict?layers=max_pooling2d", request.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
        let answer = json(&body);
        assert_eq!(floats(&answer["probabilities"]), *want, "{digit} as JSON");
        let layers = answer["layers"].as_array().expect("layers");
        let names: Vec<&str> = layers.iter().filter_map(|l| l["name"].as_str()).collect();
        assert_eq!(names, ["conv2d", "max_pooling2d"], "in the model's order");
        assert_eq!(layers[0]["type"], "Conv2D");
        assert_eq!(layers[0]["shape"], json!([28, 28, 8]));
        assert_eq!(layers[1]["shape"], json!([14, 14, 8]));
        let values = floats(&layers[0]["values"]);
        let want_conv: Vec<f32> = conv[i].iter().copied().collect();
        let worst = values
            .iter()
            .zip(&want_conv)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-6, "conv2d's values differ from predict's by {worst}");
        let low = values.iter().copied().fold(0.0f32, f32::min);
        let high = values.iter().copied().fold(f32::MIN, f32::max);
        assert_eq!(floats(&layers[0]["range"]), [low, high]);
    }
}

#[test]
fn every_bad_request_is_a_4xx_naming_its_problem() {
    let server = Server::start(&["--max-body", "20000"]);
    let zeros = |n: usize| vec![0.0f32; n];
    let post = |body: &[u8]| server.post("predict", body);
    let cases: Vec<(&str, (u16, String), u16, &str)> = vec![
        ("empty", post(b""), 400, "the body is empty"),
        ("text", post(b"hello"), 415, "not an image"),
        (
            "a GIF",
            post(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"),
            415,
            "neither PNG nor JPEG",
        ),
        (
            "a broken PNG",
            post(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"),
            400,
            "the image: not a readable image",
        ),
        (
            "too few values",
            post(json!({ "input": zeros(10) }).to_string().as_bytes()),
            400,
            "`input` has 10 values, the model reads 28x28x1 = 784 values",
        ),
        (
            "null",
            post(format!("{{\"input\": [null{}]}}", ",0".repeat(783)).as_bytes()),
            400,
            "`input[0]` is null: NaN in input",
        ),
        (
            "NaN",
            post(format!("{{\"input\": [0, NaN{}]}}", ",0".repeat(782)).as_bytes()),
            400,
            "NaN in input",
        ),
        (
            "beyond float32",
            post(format!("{{\"input\": [0, 1e39{}]}}", ",0".repeat(782)).as_bytes()),
            400,
            "`input[1]` = 1e+39 is beyond float32's range",
        ),
        (
            "a string",
            post(format!("{{\"input\": [\"a\"{}]}}", ",0".repeat(783)).as_bytes()),
            400,
            "`input[0]` = \"a\" is not a number",
        ),
        (
            "an unknown field",
            post(br#"{"inputs": [0]}"#),
            400,
            "unknown field `inputs`",
        ),
        ("no input", post(br#"{"layers": []}"#), 400, "missing field `input`"),
        (
            "broken JSON",
            post(br#"{"input": [0,"#),
            400,
            "the body is not the JSON",
        ),
        (
            "an unknown layer",
            server.post("predict?layers=conv2", &std::fs::read(DIGITS[0]).expect("the digit")),
            400,
            "the model has no layer `conv2` (did you mean `conv2d`?); its layers: conv2d, max_pooling2d, conv2d_1, flatten, dense",
        ),
        (
            "too large",
            post(&vec![b' '; 20001]),
            413,
            "the body is larger than the limit of 20000 bytes",
        ),
        (
            "no such endpoint",
            server.get("predictions"),
            404,
            "no such endpoint `/predictions`",
        ),
        (
            "GET /predict",
            server.get("predict"),
            405,
            "/predict takes POST, not GET",
        ),
        (
            "POST /model",
            server.post("model", b""),
            405,
            "/model takes GET, not POST",
        ),
    ];
    for (what, answer, status, message) in cases {
        let error = refusal(answer, status);
        assert!(error.contains(message), "{what}: {message:?} not in {error:?}");
    }
    // Still serving after all that.
    assert_eq!(server.get("health").0, 200);
    let out = server.interrupt();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn eight_clients_of_200_requests_each_get_predicts_answers() {
    let dir = Scratch::new("serve-load");
    let digits: Vec<String> = DIGITS.iter().map(|d| absolute(d)).collect();
    let (expected, _) = predicted(&dir, &digits.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let bodies: Vec<Vec<u8>> = DIGITS.iter().map(|d| std::fs::read(d).expect("the digit")).collect();
    let server = Server::start(&[]);
    let started = Instant::now();
    std::thread::scope(|s| {
        for client in 0..8 {
            let (server, bodies, expected) = (&server, &bodies, &expected);
            s.spawn(move || {
                for i in 0..200 {
                    let k = (client + i) % 2;
                    let (status, body) = server.post("predict", &bodies[k]);
                    assert_eq!(status, 200, "{body}");
                    assert_eq!(floats(&json(&body)["probabilities"]), expected[k]);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "1,600 requests took {elapsed:?}");
    let out = server.interrupt();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "stopped after 1600 requests\n");
    // One log line per request, with its latency.
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1600, "{log}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("POST /predict 200 ") && l.ends_with(" ms")),
        "{log}"
    );
}

#[test]
fn ctrl_c_stops_it_cleanly_and_a_busy_port_is_an_error() {
    let server = Server::start(&["--workers", "1"]);
    assert!(server.banner.contains("with 1 worker:"), "{}", server.banner);
    let port = server
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .expect("a port")
        .to_string();
    let busy = cnnc(&["serve", MODEL, "--weights", WEIGHTS, "--port", &port]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        stderr(&busy).starts_with(&format!("error: cannot listen on 127.0.0.1:{port}: ")),
        "{}",
        stderr(&busy)
    );
    assert_eq!(server.get("health").0, 200);
    let out = server.interrupt();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "stopped after 1 request\n");
}

#[test]
fn an_ipv6_host_is_bracketed() {
    let server = Server::start(&["--host", "::1"]);
    assert!(server.url.starts_with("http://[::1]:"), "{}", server.banner);
    assert_eq!(server.get("health").0, 200);
}
