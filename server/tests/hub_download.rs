//! `config::resolve` against a fake Hugging Face Hub on 127.0.0.1.
//!
//! The fake speaks the part of the Hub protocol that `hf-hub` 0.4.3's sync
//! API uses, per file:
//!
//! 1. `GET {endpoint}/{repo}/resolve/{revision}/{file}` with `Range: bytes=0-0`
//!    on a client that does not follow redirects. It needs `x-repo-commit`,
//!    `etag` (or `x-linked-etag`) and `Content-Range: bytes 0-0/{size}`. Like
//!    the real Hub, LFS files (weights) answer `302` to an absolute CDN URL
//!    with `x-linked-etag`; `hf-hub` then GETs that URL with `Range: bytes=0-0`
//!    for the `Content-Range`.
//! 2. `GET` of the same resolve URL with `Range: bytes={start}-`, following
//!    redirects, for the body.
//!
//! A missing file is `404` with `x-error-code: EntryNotFound`. All of these
//! carry `Authorization: Bearer $HF_TOKEN` when a token is set (the redirect
//! stays on the same host here, so it keeps the header).
//!
//! The `HF_*` variables are process-wide, so everything runs in one test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use inferd::config::{parse_catalog, resolve, Catalog, ConfigError, ResolvedModel};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_test_secret";

/// One request as the fake saw it (header names lower-cased).
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
}

/// A repo's files; `gated` repos want `Authorization: Bearer TOKEN`.
struct FakeRepo {
    files: HashMap<String, Vec<u8>>,
    gated: bool,
}

struct FakeHub {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeHub {
    fn start(repos: HashMap<String, FakeRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (repos, log, base) = (Arc::new(repos), seen.clone(), endpoint.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (repos, log, base) = (repos.clone(), log.clone(), base.clone());
                std::thread::spawn(move || serve(stream, &repos, &log, &base));
            }
        });
        Self { endpoint, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A stable fake content hash, used as etag and CDN path.
fn etag(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}{:016x}", h.rotate_left(17) ^ bytes.len() as u64)
}

fn is_lfs(file: &str) -> bool {
    file.ends_with(".gguf") || file.ends_with(".safetensors")
}

/// Handle one request on one connection (`Connection: close`).
fn serve(stream: TcpStream, repos: &HashMap<String, FakeRepo>, log: &Mutex<Vec<Seen>>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers.clone(),
    });
    let authorized =
        headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));

    let mut out = stream;
    let respond = |out: &mut TcpStream, status: &str, extra: &[(String, String)], body: &[u8]| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes()).unwrap();
        out.write_all(body).unwrap();
    };
    let range_body = |out: &mut TcpStream, bytes: &[u8], mut extra: Vec<(String, String)>| {
        let Some(spec) = headers.get("range").and_then(|r| r.strip_prefix("bytes=")) else {
            return respond(out, "200 OK", &extra, bytes);
        };
        let (a, b) = spec.split_once('-').unwrap();
        let start: usize = a.parse().unwrap();
        let end = if b.is_empty() {
            bytes.len() - 1
        } else {
            b.parse::<usize>().unwrap().min(bytes.len() - 1)
        };
        extra.push((
            "Content-Range".into(),
            format!("bytes {start}-{end}/{}", bytes.len()),
        ));
        respond(out, "206 Partial Content", &extra, &bytes[start..=end]);
    };

    // CDN: /cdn/{etag}, any repo.
    if let Some(tag) = path.strip_prefix("/cdn/") {
        let found = repos
            .values()
            .flat_map(|r| r.files.values())
            .find(|b| etag(b) == tag);
        return match found {
            Some(bytes) => range_body(&mut out, bytes, vec![]),
            None => respond(&mut out, "404 Not Found", &[], b""),
        };
    }
    // /{org}/{name}/resolve/{revision}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let (repo_id, file) = match parts.as_slice() {
        [org, name, "resolve", "main", file] => (format!("{org}/{name}"), file.to_string()),
        _ => return respond(&mut out, "400 Bad Request", &[], b"unexpected request"),
    };
    let Some(repo) = repos.get(&repo_id) else {
        return respond(
            &mut out,
            "404 Not Found",
            &[("x-error-code".into(), "RepoNotFound".into())],
            b"",
        );
    };
    if repo.gated && !authorized {
        return respond(
            &mut out,
            "401 Unauthorized",
            &[("x-error-code".into(), "GatedRepo".into())],
            b"",
        );
    }
    let commit = ("x-repo-commit".to_string(), COMMIT.to_string());
    let Some(bytes) = repo.files.get(&file) else {
        let code = ("x-error-code".to_string(), "EntryNotFound".to_string());
        return respond(
            &mut out,
            "404 Not Found",
            &[code, commit],
            b"Entry not found",
        );
    };
    let tag = etag(bytes);
    if is_lfs(&file) {
        let headers = [
            commit,
            ("x-linked-etag".into(), format!("\"{tag}\"")),
            ("etag".into(), "\"pointer-etag\"".into()),
            ("Location".into(), format!("{base}/cdn/{tag}")),
        ];
        respond(&mut out, "302 Found", &headers, b"");
    } else {
        range_body(
            &mut out,
            bytes,
            vec![commit, ("etag".into(), format!("\"{tag}\""))],
        );
    }
}

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn repo(files: &[(&str, Vec<u8>)], gated: bool) -> FakeRepo {
    let files = files
        .iter()
        .map(|(n, b)| (n.to_string(), b.clone()))
        .collect();
    FakeRepo { files, gated }
}

fn catalog(text: &str) -> Catalog {
    parse_catalog(text, Path::new("/"), PathBuf::from("test.toml")).unwrap()
}

#[test]
fn hub_download_end_to_end() {
    let home = std::env::temp_dir().join(format!("inferd-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let mut gguf = b"GGUF\x03\0\0\0".to_vec();
    gguf.extend(blob(7, 300_000));
    let mut big = b"GGUF\x03\0\0\0".to_vec();
    big.extend(blob(9, 200_000));
    let shard1 = blob(1, 70_000);
    let shard2 = blob(2, 50_000);
    let index = br#"{"metadata":{"total_size":120000},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors","c.weight":"model-00001-of-00002.safetensors"}}"#.to_vec();
    let hub = FakeHub::start(HashMap::from([
        (
            "org/tiny-GGUF".to_string(),
            repo(
                &[
                    ("tiny.Q4_0.gguf", gguf.clone()),
                    ("tiny.Q8_0.gguf", big.clone()),
                ],
                false,
            ),
        ),
        (
            "org/sharded".to_string(),
            repo(
                &[
                    ("config.json", br#"{"model_type":"llama"}"#.to_vec()),
                    ("tokenizer.json", br#"{"version":"1.0"}"#.to_vec()),
                    ("tokenizer_config.json", br#"{"eos_token":"</s>"}"#.to_vec()),
                    ("model.safetensors.index.json", index.clone()),
                    ("model-00001-of-00002.safetensors", shard1.clone()),
                    ("model-00002-of-00002.safetensors", shard2.clone()),
                ],
                false,
            ),
        ),
        (
            "org/gated".to_string(),
            repo(
                &[
                    ("config.json", b"{}".to_vec()),
                    ("tokenizer.json", b"{}".to_vec()),
                    ("tokenizer_config.json", b"{}".to_vec()),
                    ("generation_config.json", b"{}".to_vec()),
                    ("model.safetensors", blob(3, 4096)),
                ],
                true,
            ),
        ),
    ]));
    // ureq 2 (under hf-hub) ignores NO_PROXY: keep a CI proxy off 127.0.0.1.
    for var in [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "HF_TOKEN_PATH",
    ] {
        std::env::remove_var(var);
    }
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_ENDPOINT", format!("{}/", hub.endpoint));

    let cat = catalog(
        "[[model]]\nid = \"tiny\"\nhf = \"org/tiny-GGUF\"\nfile = \"tiny.Q4_0.gguf\"\n\
         [[model]]\nid = \"sharded\"\nhf = \"org/sharded\"\n\
         [[model]]\nid = \"gated\"\nhf = \"org/gated\"\n\
         [[model]]\nid = \"resume\"\nhf = \"org/tiny-GGUF\"\nfile = \"tiny.Q8_0.gguf\"\n\
         [[model]]\nid = \"missing\"\nhf = \"org/tiny-GGUF\"\nfile = \"nope.gguf\"\n",
    );
    let spec = |id: &str| cat.get(id).unwrap();
    let snapshots = |repo: &str| {
        home.join("hub")
            .join(format!("models--{}", repo.replace('/', "--")))
            .join("snapshots")
            .join(COMMIT)
    };

    // (a) A GGUF file: bytes and cache layout.
    let ResolvedModel::Gguf(path) = resolve(spec("tiny")).unwrap() else {
        panic!("expected GGUF")
    };
    assert_eq!(path, snapshots("org/tiny-GGUF").join("tiny.Q4_0.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), gguf);
    let after_first = hub.requests().len();
    let ranges: Vec<String> = hub
        .requests()
        .iter()
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert!(
        ranges.contains(&"bytes=0-0".into()) && ranges.contains(&"bytes=0-".into()),
        "{ranges:?}"
    );
    assert!(hub
        .requests()
        .iter()
        .all(|s| !s.headers.contains_key("authorization")));

    // Cached: no request the second time.
    assert_eq!(
        resolve(spec("tiny")).unwrap(),
        ResolvedModel::Gguf(path.clone())
    );
    assert_eq!(
        hub.requests().len(),
        after_first,
        "second resolve must use the cache"
    );

    // An interrupted download (`blobs/<etag>.part`) resumes with a Range request.
    let blobs = home.join("hub/models--org--tiny-GGUF/blobs");
    std::fs::write(blobs.join(format!("{}.part", etag(&big))), &big[..123_456]).unwrap();
    let ResolvedModel::Gguf(resumed) = resolve(spec("resume")).unwrap() else {
        panic!("expected GGUF")
    };
    assert_eq!(std::fs::read(resumed).unwrap(), big);
    let last = hub.requests().last().cloned().unwrap();
    assert_eq!(
        last.headers.get("range").map(String::as_str),
        Some("bytes=123456-")
    );

    // (b) A sharded safetensors repo without model.safetensors and generation_config.json.
    let ResolvedModel::SafetensorsDir(dir) = resolve(spec("sharded")).unwrap() else {
        panic!("expected a directory")
    };
    assert_eq!(dir, snapshots("org/sharded"));
    assert_eq!(
        std::fs::read(dir.join("model-00001-of-00002.safetensors")).unwrap(),
        shard1
    );
    assert_eq!(
        std::fs::read(dir.join("model-00002-of-00002.safetensors")).unwrap(),
        shard2
    );
    assert_eq!(
        std::fs::read(dir.join("model.safetensors.index.json")).unwrap(),
        index
    );
    assert!(dir.join("config.json").is_file() && dir.join("tokenizer_config.json").is_file());
    assert!(
        !dir.join("generation_config.json").exists() && !dir.join("model.safetensors").exists()
    );
    let count = hub.requests().len();
    assert_eq!(
        resolve(spec("sharded")).unwrap(),
        ResolvedModel::SafetensorsDir(dir.clone())
    );
    assert_eq!(
        hub.requests().len(),
        count,
        "known-missing optional files are not asked for again"
    );

    // A gated repo: 401 without a token, then HF_TOKEN is sent as a bearer token.
    let e = resolve(spec("gated")).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Hub(ref h) if h.status == Some(401)
        ),
        "{e}"
    );
    assert!(e.to_string().contains("HF_TOKEN"), "{e}");
    std::env::set_var("HF_TOKEN", TOKEN);
    let before = hub.requests().len();
    let ResolvedModel::SafetensorsDir(gdir) = resolve(spec("gated")).unwrap() else {
        panic!()
    };
    assert!(
        gdir.join("model.safetensors").is_file() && gdir.join("generation_config.json").is_file()
    );
    let gated_reqs = &hub.requests()[before..];
    assert!(gated_reqs.len() >= 10, "{gated_reqs:?}");
    assert!(
        gated_reqs
            .iter()
            .all(|s| s.headers.get("authorization").map(String::as_str)
                == Some("Bearer hf_test_secret")),
        "{gated_reqs:?}"
    );

    // A 404 file names the file, the repo and the endpoint.
    let e = resolve(spec("missing")).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, ConfigError::Hub(h) if h.status == Some(404) && h.file == "nope.gguf"),
        "{e}"
    );
    for part in ["nope.gguf", "org/tiny-GGUF", "main", hub.endpoint.as_str()] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }

    // Offline: cached models resolve without requests; others fail clearly.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let before = hub.requests().len();
    assert_eq!(resolve(spec("tiny")).unwrap(), ResolvedModel::Gguf(path));
    let e = resolve(spec("missing")).unwrap_err().to_string();
    assert!(e.contains("HF_HUB_OFFLINE"), "{e}");
    assert_eq!(hub.requests().len(), before);

    // Only the resolve and CDN URLs were used.
    for s in hub.requests() {
        assert!(
            s.path.contains("/resolve/main/") || s.path.starts_with("/cdn/"),
            "{s:?}"
        );
    }
    for var in ["HF_HOME", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE"] {
        std::env::remove_var(var);
    }
    std::fs::remove_dir_all(&home).unwrap();
}
