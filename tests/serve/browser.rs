//! The page in a real headless Chromium, driven through the DevTools
//! protocol: a digit stroke drawn with mouse events on the canvas must
//! bring up the top classes and every conv and pool layer's maps.

use crate::common::{Scratch, cnnc, stderr};
use crate::server::{MODEL, Server};
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const INSTALL: &str =
    "headless Chromium is needed: `apt-get install -y chromium` (Debian's package; .ci/run installs it)";

/// A headless Chromium and its DevTools connection to one page.
struct Browser {
    child: Child,
    page: WebSocket<MaybeTlsStream<TcpStream>>,
    next: u64,
    _profile: Scratch,
}

impl Browser {
    fn launch() -> Browser {
        let profile = Scratch::new("serve-chromium");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1200,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromium ({e}): {INSTALL}"));
        // Chromium says where its DevTools listen once they do.
        let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        let endpoint = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).expect("chromium's stderr") > 0,
                "chromium ended: {INSTALL}"
            );
            if let Some(at) = line.find("ws://") {
                break line[at..].trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in stderr.lines() {});
        let http = endpoint.replacen("ws://", "http://", 1);
        let base = &http[..http.find("/devtools").expect("a DevTools address")];
        let targets: Value = ureq::get(&format!("{base}/json/list"))
            .call()
            .expect("DevTools answer")
            .into_json()
            .expect("a JSON list");
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page")
            .to_string();
        let (page, _) = tungstenite::connect(page).expect("the page's DevTools");
        Browser {
            child,
            page,
            next: 0,
            _profile: profile,
        }
    }

    /// Sends a DevTools command and waits for its result (events between are
    /// skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.page.send(Message::text(message)).expect("sent");
        loop {
            let reply = self.page.read().expect("a DevTools message");
            let Ok(text) = reply.to_text() else { continue };
            let value: Value = serde_json::from_str(text).expect("JSON");
            if value["id"] == json!(id) {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page.
    fn until(&mut self, expression: &str, what: &str) {
        let started = Instant::now();
        while self.eval(expression) != json!(true) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the page never showed {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mouse(&mut self, kind: &str, (x, y): (f64, f64)) {
        let buttons = if kind == "mouseReleased" { 0 } else { 1 };
        self.call(
            "Input.dispatchMouseEvent",
            json!({ "type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1 }),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_seven_drawn_on_the_page_is_a_seven_with_every_map_shown() {
    // Trained weights, so that the digit drawn is recognised (94 % of the
    // test digits after 3 epochs).
    let runs = Scratch::new("serve-train");
    let out = runs.path().display().to_string();
    let trained = cnnc(&["run", MODEL, "--epochs", "3", "--out", &out]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    let weights = runs.path().join("do_the_math/weights.safetensors");
    let server = Server::with_weights(&weights.display().to_string(), &[]);
    let mut browser = Browser::launch();
    browser.call("Page.enable", json!({}));
    browser.call("Page.navigate", json!({ "url": server.url }));
    browser.until(
        "document.body && document.body.dataset.ready === 'yes'",
        "the drawing pad",
    );

    let pad = browser.eval("(() => { const p = document.getElementById('pad'), r = p.getBoundingClientRect(); return [r.left + p.clientLeft, r.top + p.clientTop, p.clientWidth]; })()");
    let [left, top, width] = [0, 1, 2].map(|i| pad[i].as_f64().expect("a number"));
    assert_eq!(width, 280.0);
    // A 7: the bar, then the stem, in pad coordinates.
    let stroke: Vec<(f64, f64)> = (0..=10)
        .map(|i| (70.0 + 14.0 * f64::from(i), 70.0))
        .chain((1..=10).map(|i| (210.0 - 9.0 * f64::from(i), 70.0 + 15.0 * f64::from(i))))
        .map(|(x, y)| (left + x, top + y))
        .collect();
    browser.mouse("mousePressed", stroke[0]);
    for &p in &stroke[1..] {
        browser.mouse("mouseMoved", p);
    }
    browser.mouse("mouseReleased", stroke[stroke.len() - 1]);
    browser.until(
        "Number(document.body.dataset.answered || 0) >= 1 && document.querySelectorAll('#top .row').length === 5",
        "the top classes",
    );
    // Answers keep coming while the stroke is drawn: wait for the last.
    std::thread::sleep(Duration::from_millis(300));

    let shown = browser.eval(
        "(() => {
            const rows = [...document.querySelectorAll('#top .row')].map((r) => [
                r.querySelector('.name').textContent,
                Number(r.querySelector('.p').textContent),
                r.querySelector('.bar').getBoundingClientRect().width]);
            const layers = [...document.querySelectorAll('.layer')].map((l) => {
                const maps = [...l.querySelectorAll('canvas')];
                const lit = maps.filter((c) => {
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    for (let i = 0; i < d.length; i += 4) if (d[i] !== d[0]) return true;
                    return false;
                }).length;
                return [l.dataset.name, maps.length, lit, maps[0] ? [maps[0].width, maps[0].height] : null];
            });
            const p = document.getElementById('pad');
            const d = p.getContext('2d').getImageData(0, 0, p.width, p.height).data;
            let ink = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] > 128) ink++;
            return { rows, layers, ink, error: document.getElementById('error').textContent };
        })()",
    );
    assert_eq!(shown["error"], "", "{shown}");
    assert!(
        shown["ink"].as_u64().expect("a count") > 2000,
        "the stroke was not drawn: {shown}"
    );
    let rows = shown["rows"].as_array().expect("rows");
    assert_eq!(rows[0][0], "7", "{shown}");
    let probabilities: Vec<f64> = rows.iter().map(|r| r[1].as_f64().expect("p")).collect();
    assert!(probabilities.windows(2).all(|w| w[0] >= w[1]), "{shown}");
    for r in rows {
        let digit: u32 = r[0].as_str().and_then(|n| n.parse().ok()).expect("a digit's name");
        assert!(digit < 10, "{shown}");
        assert!(r[2].as_f64().expect("a width") >= 1.0, "{shown}");
    }
    // Every conv and pool layer of do_the_math, each channel a map.
    assert_eq!(
        shown["layers"],
        json!([
            ["conv2d", 8, 8, [28, 28]],
            ["max_pooling2d", 8, 8, [14, 14]],
            ["conv2d_1", 16, shown["layers"][2][2], [14, 14]]
        ]),
        "{shown}"
    );
    assert!(shown["layers"][2][2].as_u64().expect("a count") >= 8, "{shown}");

    // The page's answer is the server's for the pad's pixels.
    let same = browser.eval(
        "(async () => {
            const input = digit(document.getElementById('pad'));
            const r = await fetch('/predict', { method: 'POST', body: JSON.stringify({ input }) });
            return (await r.json()).top[0].name;
        })()",
    );
    assert_eq!(same, rows[0][0], "{shown}");

    let shot = browser.call(
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true }),
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("base64"))
        .expect("a screenshot");
    let picture = image::load_from_memory(&png).expect("a PNG").to_rgb8();
    assert_eq!(picture.width(), 1200);
    // The pad's corner in the picture is black (the digit is drawn white on black).
    let (x, y) = ((left + 5.0) as u32, (top + 5.0) as u32);
    assert_eq!(
        picture.get_pixel(x, y).0,
        [0, 0, 0],
        "the screenshot shows no pad at ({x}, {y})"
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    std::fs::write(&path, &png).expect("the screenshot is kept");
    eprintln!("the page: {}", path.display());
}

#[test]
fn an_image_given_to_an_rgb_models_page_shows_its_classes_and_maps() {
    // celeb8 reads 64x64x3 photos; its initial weights will do for the page.
    let server = Server::serving(&["models/celeb8.cnn"]);
    let (_, model) = server.get("model");
    let model: Value = serde_json::from_str(&model).expect("the summary");
    let maps: Vec<Value> = model["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| {
            ["Conv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D"]
                .contains(&l["type"].as_str().unwrap_or_default())
        })
        .map(|l| json!([l["name"], l["output_shape"][3]]))
        .collect();
    assert!(maps.len() >= 2, "{model}");

    let mut browser = Browser::launch();
    browser.call("Page.enable", json!({}));
    browser.call("Page.navigate", json!({ "url": server.url }));
    browser.until(
        "document.body && document.body.dataset.ready === 'yes'",
        "the image drop",
    );
    assert_eq!(
        browser.eval("!!document.getElementById('drop') && !document.getElementById('pad')"),
        json!(true)
    );
    let document = browser.call("DOM.getDocument", json!({}));
    let root = document["root"]["nodeId"].clone();
    let input = browser.call(
        "DOM.querySelector",
        json!({ "nodeId": root, "selector": "input[type=file]" }),
    );
    let picture = std::env::current_dir()
        .expect("a folder")
        .join("models/data/examples/shapes.png");
    browser.call(
        "DOM.setFileInputFiles",
        json!({ "nodeId": input["nodeId"], "files": [picture.display().to_string()] }),
    );
    browser.until(
        "Number(document.body.dataset.answered || 0) >= 1 && document.querySelectorAll('#top .row').length === 5",
        "the top classes",
    );
    let shown = browser.eval(
        "[...document.querySelectorAll('.layer')].map((l) => [l.dataset.name, l.querySelectorAll('canvas').length])",
    );
    assert_eq!(shown, json!(maps));
    assert_eq!(browser.eval("document.querySelectorAll('#drop img').length"), json!(1));
    assert_eq!(browser.eval("document.getElementById('error').textContent"), json!(""));
}
