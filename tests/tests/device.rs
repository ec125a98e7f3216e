//! Device selection end to end: the real `inferd serve` binary asked for a CUDA device on
//! this GPU-less machine refuses at start-up, naming where it was asked (the `device` key or
//! `--device`), and `auto` serves the real model on the CPU.
//!
//! Run against the CPU binary by `cargo test`; `make cuda-check` runs it again against the
//! CUDA binary (`INFERD_BIN=.../inferd-cuda INFERD_EXPECT_CUDA_BUILD=1`), which must start
//! here and say that there is no GPU instead of that it was built without CUDA.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inferd_tests::{
    completion_body, inferd_bin, post_ok, smollm2_catalog, start_with_catalog, ServerOptions,
    TempDir, COMPLETIONS, SMOLLM2_ID,
};

/// Whether the binary under test is the CUDA build.
fn cuda_build() -> bool {
    std::env::var("INFERD_EXPECT_CUDA_BUILD").is_ok_and(|v| v == "1")
}

/// Runs `inferd serve` on a catalog of SmolLM2 with `device`, plus `args`; it must exit
/// non-zero within a minute (it never loads the model). Returns its stderr.
fn refused(device: &str, args: &[&str]) -> String {
    let dir = TempDir::new("device");
    let models = dir.0.join("models.toml");
    let catalog = format!(
        "{}device = \"{device}\"\n",
        smollm2_catalog(&ServerOptions::default())
    );
    std::fs::write(&models, catalog).expect("write models.toml");
    let mut child = Command::new(inferd_bin())
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--models"])
        .arg(&models)
        .args(args)
        .env_remove("INFERD_DEVICE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn inferd");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for inferd") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("inferd serve with device {device:?} {args:?} kept running: it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap();
    assert!(!status.success(), "it must fail: {stderr}");
    stderr
}

/// The second half of the message: why there is no CUDA device here.
fn assert_says_why(stderr: &str) {
    if cuda_build() {
        assert!(
            stderr.contains("none is usable on this host") && stderr.contains("libcuda.so.1"),
            "the CUDA build must say there is no driver here: {stderr}"
        );
    } else {
        assert!(
            stderr.contains("built without CUDA") && stderr.contains("make build-cuda"),
            "the CPU build must say it has no CUDA and how to get it: {stderr}"
        );
    }
}

#[test]
fn a_cuda_device_key_is_refused_naming_the_key() {
    for device in ["cuda", "cuda:0", "cuda:3"] {
        let stderr = refused(device, &[]);
        let key = format!("model \"{SMOLLM2_ID}\": `device` = \"{device}\" asks for a CUDA GPU");
        assert!(stderr.contains(&key), "{key:?} missing from: {stderr}");
        assert_says_why(&stderr);
    }
}

#[test]
fn the_device_flag_overrides_the_key_and_is_named() {
    let stderr = refused("cpu", &["--device", "cuda"]);
    assert!(
        stderr.contains("`--device` (INFERD_DEVICE) = \"cuda\" asks for a CUDA GPU"),
        "{stderr}"
    );
    assert_says_why(&stderr);
}

#[test]
fn a_misspelt_device_is_a_config_error() {
    let stderr = refused("gpu", &[]);
    assert!(
        stderr.contains("invalid `device`") && stderr.contains("\"cuda:N\""),
        "{stderr}"
    );
    let stderr = refused("cpu", &["--device", "cuda:x"]);
    assert!(stderr.contains("--device"), "{stderr}");
}

#[tokio::test]
async fn auto_serves_on_the_cpu_here() {
    let o = ServerOptions::default();
    let catalog = format!("{}device = \"auto\"\n", smollm2_catalog(&o));
    let server = start_with_catalog(&catalog, SMOLLM2_ID, &o).await;
    let body = completion_body(
        &server,
        "The capital of France is",
        serde_json::json!({"max_tokens": 4, "temperature": 0}),
    );
    let reply = post_ok(&server, COMPLETIONS, &body).await;
    assert_eq!(reply["usage"]["completion_tokens"], 4, "{reply}");
}
