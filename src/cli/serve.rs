//! `cnnc serve FILE [--weights W]`: the model compiled once and served over
//! HTTP, with the live demo page at `/` (`runtime::serve`).

use super::check::summarize;
use super::common::{ConvArgs, Failure, Format, SetArgs, fail, ignored_note, load, trained_or_initial};
use crate::runtime::serve::{self, Options, Service};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Trained weights (safetensors with Keras names) [default: the model's
    /// initial weights, seed 0: its literal filters, say, or for timing]
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The port; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to listen on: loopback unless told otherwise, since the
    /// server has no authentication.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Workers, each with its own compiled engine [default: one per core]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body: usize,
    /// Accept a weights file holding tensors the model lacks: they are
    /// ignored, and listed.
    #[arg(long)]
    allow_extra: bool,
    #[command(flatten)]
    conv: ConvArgs,
}

pub fn run(args: ServeArgs) -> Result<String, Failure> {
    let checked = load(&args.file, &args.set)?;
    let summary = summarize(&checked, Format::Json, &args.conv)?;
    let loaded = trained_or_initial(&checked, args.weights.as_deref(), args.allow_extra)?;
    if let Some(w) = &args.weights {
        eprint!("{}", ignored_note(w, &loaded.ignored));
    }
    let workers = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n as usize,
    );
    let service = Service {
        graphs: loaded.graphs,
        weights: loaded.state.values[..loaded.state.weights].to_vec(),
        classes: loaded.classes,
        summary,
        checked,
        options: args.conv.options(),
    };
    let options = Options {
        host: args.host,
        port: args.port,
        workers,
        max_body: args.max_body,
    };
    let running = serve::start(service, &options).map_err(fail)?;
    let stop = running.stopper();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .map_err(|e| Failure::new(format!("cannot catch Ctrl-C: {e}")))?;
    println!(
        "serving {} on {} with {workers} worker{}: open it in a browser; Ctrl-C stops",
        args.file.display(),
        running.url,
        if workers == 1 { "" } else { "s" }
    );
    // Tests and scripts read the address from a pipe.
    let _ = std::io::stdout().flush();
    let served = running.join();
    let plural = if served.requests == 1 { "" } else { "s" };
    Ok(format!("stopped after {} request{plural}\n", served.requests))
}
