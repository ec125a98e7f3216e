//! With the `cuda` feature: compiles every `cuda/*.cu` with nvcc into a fatbin (SASS for
//! `CUDA_COMPUTE_CAP` plus PTX for the same virtual arch, which newer GPUs JIT), embedded in
//! the crate by `src/cuda/fatbin.rs`. Without the feature it does nothing, so the CPU build
//! needs no CUDA toolkit. Never asks a GPU (no `nvidia-smi`): the arch comes from the
//! environment, default 90 (H100/H200).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Compute capabilities the kernels are written and tested for (bf16 needs sm_80+).
const ACCEPTED_CAPS: &[&str] = &["80", "89", "90"];
const DEFAULT_CAP: &str = "90";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    for var in ["CUDA_COMPUTE_CAP", "NVCC", "CUDA_HOME", "NVCC_CCBIN"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| DEFAULT_CAP.to_string());
    let cap = cap.trim().trim_start_matches("sm_").replace('.', "");
    if !ACCEPTED_CAPS.contains(&cap.as_str()) {
        panic!(
            "CUDA_COMPUTE_CAP={cap}: inferd's kernels are built for compute capability {} \
             (default {DEFAULT_CAP})",
            ACCEPTED_CAPS.join(", ")
        );
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let src_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("cuda");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", src_dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    let nvcc = nvcc();
    let mut table = String::from("pub static MODULES: &[(&str, &[u8])] = &[\n");
    for src in &sources {
        let name = src.file_stem().unwrap().to_string_lossy().into_owned();
        let fatbin = out.join(format!("{name}.fatbin"));
        compile(&nvcc, src, &src_dir, &fatbin, &cap);
        writeln!(
            table,
            "    ({name:?}, include_bytes!({:?})),",
            fatbin.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    std::fs::write(out.join("fatbins.rs"), table).expect("writing fatbins.rs");
    println!("cargo:rustc-env=INFERD_CUDA_COMPUTE_CAP={cap}");
}

fn nvcc() -> PathBuf {
    if let Some(p) = env::var_os("NVCC") {
        return PathBuf::from(p);
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        return Path::new(&home).join("bin").join("nvcc");
    }
    PathBuf::from("nvcc")
}

fn compile(nvcc: &Path, src: &Path, include: &Path, out: &Path, cap: &str) {
    let mut cmd = Command::new(nvcc);
    cmd.arg("--fatbin")
        .args(["-O3", "-std=c++17", "-lineinfo"])
        .args(["-Xptxas", "-warn-spills"])
        .arg(format!("-gencode=arch=compute_{cap},code=sm_{cap}"))
        .arg(format!("-gencode=arch=compute_{cap},code=compute_{cap}"))
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(out)
        .arg(src);
    if let Some(ccbin) = env::var_os("NVCC_CCBIN") {
        cmd.arg("-ccbin").arg(ccbin);
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "running {} (set NVCC or CUDA_HOME, or `make cuda-toolkit`): {e}",
            nvcc.display()
        )
    });
    if !status.success() {
        panic!("nvcc failed on {} ({status})", src.display());
    }
}
