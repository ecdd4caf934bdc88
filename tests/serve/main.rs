//! `cnnc serve`: its API over real HTTP (every endpoint and every refusal,
//! concurrent clients whose answers equal `cnnc predict`'s, the body limit,
//! Ctrl-C), and its page in a real headless Chromium.

#[path = "../common/mod.rs"]
mod common;
mod server;

mod api;
mod browser;
