//! Helpers shared by the end-to-end tests: run the `shears` binary and read its output.

#![allow(dead_code)] // each test file uses its own subset

use serde_json::Value;
use std::process::{Command, Output};

/// Runs `shears` with quiet logs.
pub fn shears(args: &[&str]) -> Output {
    shears_env(args, &[])
}

/// Runs `shears` with extra environment variables.
pub fn shears_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shears"));
    cmd.args(args).env("SHEARS_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs shears")
}

/// The single JSON object a successful `--json` run printed on stdout.
pub fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "shears failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The error message of a run that must fail.
pub fn err_text(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}
