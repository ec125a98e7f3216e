//! The machine a run happened on (so results from different machines are never mixed) and
//! the server's memory, read from /proc and /sys at run time. `nvidia-smi` is asked for GPU
//! names only when it is on PATH when the bench runs.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub cpu_model: String,
    /// Logical CPUs this process may run on.
    pub cpus: usize,
    /// Physical cores (distinct core ids), when /proc/cpuinfo says.
    pub physical_cores: Option<usize>,
    pub memory_bytes: Option<u64>,
    pub gpus: Vec<String>,
    pub bench_version: String,
    /// 1, 5 and 15-minute load averages when detected: other work skews the figures.
    #[serde(default)]
    pub load_average: Option<[f64; 3]>,
}

/// The 1, 5 and 15-minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = read("/proc/loadavg")?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The value of `key` in a `key : value` or `key: value` file such as /proc/cpuinfo.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// "1234 kB" → bytes.
fn kib(v: &str) -> Option<u64> {
    v.split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

impl MachineInfo {
    pub fn detect() -> MachineInfo {
        let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
        let cores: std::collections::HashSet<(String, String)> = cpuinfo
            .split("\n\n")
            .filter_map(|p| {
                Some((
                    field(p, "physical id").unwrap_or("0").to_owned(),
                    field(p, "core id")?.to_owned(),
                ))
            })
            .collect();
        let os = read("/etc/os-release")
            .and_then(|t| {
                field(&t.replace('=', ":"), "PRETTY_NAME").map(|s| s.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        MachineInfo {
            hostname: read("/proc/sys/kernel/hostname").unwrap_or_default(),
            os,
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_default(),
            arch: std::env::consts::ARCH.to_owned(),
            cpu_model: field(&cpuinfo, "model name")
                .or_else(|| field(&cpuinfo, "Model"))
                .unwrap_or("unknown")
                .to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            physical_cores: (!cores.is_empty()).then_some(cores.len()),
            memory_bytes: read("/proc/meminfo").and_then(|m| field(&m, "MemTotal").and_then(kib)),
            gpus: gpus(),
            bench_version: env!("CARGO_PKG_VERSION").to_owned(),
            load_average: load_average(),
        }
    }

    /// One line: "Intel Xeon … · 2 CPUs · 23.4 GiB · no GPU".
    pub fn one_line(&self) -> String {
        let mem = self.memory_bytes.map_or("? GiB".into(), |b| {
            format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
        });
        let gpu = if self.gpus.is_empty() {
            "no GPU".to_owned()
        } else {
            self.gpus.join(", ")
        };
        format!(
            "{} · {} CPUs · {mem} · {gpu} · {}",
            self.cpu_model, self.cpus, self.os
        )
    }
}

/// GPU names from `nvidia-smi`, when it exists at run time.
fn gpus() -> Vec<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total", "--format=csv,noheader"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        _ => vec![],
    }
}

/// Resident memory of a process: now (VmRSS) and its peak so far (VmHWM), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

pub fn read_memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = field(&status, "VmRSS").and_then(kib)?;
    Some(Memory {
        rss_bytes: rss,
        hwm_bytes: field(&status, "VmHWM").and_then(kib).unwrap_or(rss),
    })
}

/// Samples a process's memory every 100 ms until stopped; reports the peaks seen.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<Memory>>,
}

impl MemorySampler {
    pub fn start(pid: u32) -> MemorySampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak: Option<Memory> = None;
            loop {
                if let Some(m) = read_memory(pid) {
                    let p = peak.get_or_insert(m);
                    p.rss_bytes = p.rss_bytes.max(m.rss_bytes);
                    p.hwm_bytes = p.hwm_bytes.max(m.hwm_bytes);
                }
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        MemorySampler { stop, task }
    }

    /// Peak RSS seen while sampling and the process's own high-water mark at the end.
    pub async fn finish(self) -> Option<Memory> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_machine_and_process() {
        let m = MachineInfo::detect();
        assert!(m.cpus >= 1);
        assert!(!m.cpu_model.is_empty());
        assert!(m.memory_bytes.unwrap_or(0) > 0);
        let me = read_memory(std::process::id()).expect("own /proc status");
        assert!(me.rss_bytes > 0 && me.hwm_bytes >= me.rss_bytes);
        assert!(read_memory(u32::MAX).is_none());
        assert!(m.one_line().contains("CPUs"));
        assert!(m.load_average.is_some_and(|l| l.iter().all(|x| *x >= 0.0)));
    }

    #[tokio::test]
    async fn sampler_sees_the_peak() {
        let s = MemorySampler::start(std::process::id());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let m = s.finish().await.expect("sampled");
        assert!(m.rss_bytes > 0);
    }
}
