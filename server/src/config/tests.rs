//! Unit tests of catalog parsing and validation (no filesystem or network,
//! except the shipped `models.toml` and a temp dir for local `path` checks).

use super::*;

fn parse(text: &str) -> Result<Catalog, ConfigError> {
    parse_catalog(text, Path::new("/srv/inferd"), PathBuf::from("models.toml"))
}

fn one(extra: &str) -> String {
    format!("[[model]]\nid = \"m\"\npath = \"m.gguf\"\n{extra}\n")
}

fn err(text: &str) -> String {
    parse(text).expect_err("should be rejected").to_string()
}

#[test]
fn shipped_catalog_parses() {
    let path = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../models.toml");
    let catalog = load_catalog(&path).expect("shipped models.toml is valid");
    let m = catalog.get("smollm2-135m-instruct").expect("smollm2 entry");
    let Some(ModelSource::Path(p)) = &m.source else {
        panic!("expected a path source, got {:?}", m.source)
    };
    assert!(p.is_absolute(), "{}", p.display());
    assert!(p.ends_with("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert!(m.dequantize);
    let want = EngineLimits {
        max_model_len: Some(2048),
        kv_cache: Some(KvCacheSize::Tokens(32768)),
        max_num_seqs: 32,
        max_num_batched_tokens: 2048,
        block_size: 16,
        max_waiting: 256,
        enable_prefix_caching: true,
        request_timeout_secs: None,
    };
    assert_eq!(m.limits, want);
    assert!(catalog.to_string().contains("smollm2-135m-instruct"));
}

#[test]
fn defaults_and_relative_paths() {
    let c = parse(&one("")).unwrap();
    let m = &c.models[0];
    assert_eq!(
        m.source,
        Some(ModelSource::Path("/srv/inferd/m.gguf".into()))
    );
    assert!(!m.dequantize);
    assert_eq!(m.limits, EngineLimits::default());
    let abs = parse("[[model]]\nid = \"a\"\npath = \"/abs/x\"\n").unwrap();
    assert_eq!(
        abs.models[0].source,
        Some(ModelSource::Path("/abs/x".into()))
    );
}

#[test]
fn hub_sources() {
    let c = parse(
        "[[model]]\nid = \"a\"\nhf = \"org/a-GGUF\"\nfile = \"a.Q4_0.gguf\"\n\
         [[model]]\nid = \"b\"\nhf = \"org/b\"\nrevision = \"v1.0\"\n",
    )
    .unwrap();
    assert_eq!(
        c.models[0].source,
        Some(ModelSource::Hub {
            repo: "org/a-GGUF".into(),
            file: Some("a.Q4_0.gguf".into()),
            revision: "main".into()
        })
    );
    assert_eq!(
        c.models[1].source,
        Some(ModelSource::Hub {
            repo: "org/b".into(),
            file: None,
            revision: "v1.0".into()
        })
    );
    assert!(err("[[model]]\nid = \"a\"\nhf = \"a/b/c\"\n").contains("`hf`"));
    assert!(err("[[model]]\nid = \"a\"\nhf = \"o/r\"\nfile = \"x.bin\"\n").contains(".gguf"));
    assert!(err("[[model]]\nid = \"a\"\nhf = \"o/r\"\nfile = \"../x.gguf\"\n").contains("`file`"));
}

#[test]
fn unknown_key_is_named() {
    let e = err(&one("max_seqs = 3"));
    assert!(e.contains("model \"m\""), "{e}");
    assert!(e.contains("max_seqs"), "{e}");
    assert!(e.contains("max_num_seqs"), "lists the known keys: {e}");
    assert!(e.contains("line 4"), "{e}");
    let e = err("[[models]]\nid = \"m\"\n");
    assert!(e.contains("unknown field `models`"), "{e}");
    // Second entry: the error names it, not the first.
    let e =
        err("[[model]]\nid = \"a\"\npath = \"a\"\n[[model]]\nid = \"b\"\npath = \"b\"\nfoo = 1\n");
    assert!(e.contains("model \"b\""), "{e}");
}

#[test]
fn wrong_types_are_named() {
    let e = err(&one("max_num_seqs = \"many\""));
    assert!(e.contains("max_num_seqs"), "{e}");
    let e = err(&one("max_num_seqs = -1"));
    assert!(e.contains("max_num_seqs") && e.contains("-1"), "{e}");
    assert!(err("[[model]]\npath = \"x\"\n").contains("missing field `id`"));
}

#[test]
fn path_and_hf_are_exclusive() {
    let e = err(&one("hf = \"org/repo\""));
    assert!(e.contains("mutually exclusive"), "{e}");
    let e = err("[[model]]\nid = \"m\"\n");
    assert!(e.contains("`path`") && e.contains("`hf`"), "{e}");
    let e = err(&one("revision = \"main\""));
    assert!(e.contains("`revision`") && e.contains("hf"), "{e}");
    let e = err(&one("file = \"x.gguf\""));
    assert!(e.contains("`file`"), "{e}");
}

#[test]
fn duplicate_ids_and_empty_catalog() {
    let e = parse(&format!("{}{}", one(""), one(""))).unwrap_err();
    assert!(
        matches!(&e, ConfigError::DuplicateId { id, first: 1, second: 2, .. } if id == "m"),
        "{e}"
    );
    assert!(matches!(
        parse("").unwrap_err(),
        ConfigError::NoModels { .. }
    ));
    assert!(matches!(
        parse("# nothing\n").unwrap_err(),
        ConfigError::NoModels { .. }
    ));
}

#[test]
fn ids_are_checked() {
    assert!(err("[[model]]\nid = \"\"\npath = \"x\"\n").contains("model #1: invalid `id`"));
    assert!(err("[[model]]\nid = \"a b\"\npath = \"x\"\n").contains("' '"));
    assert!(parse("[[model]]\nid = \"org/Model-1.5:q4_k\"\npath = \"x\"\n").is_ok());
}

#[test]
fn kv_cache_bytes_forms() {
    for (text, want) in [
        ("\"512MiB\"", 512 << 20),
        ("\"1GiB\"", 1 << 30),
        ("\"64 KiB\"", 64 << 10),
        ("\"2048\"", 2048),
        ("1048576", 1 << 20),
    ] {
        let c = parse(&one(&format!("kv_cache_bytes = {text}"))).unwrap();
        assert_eq!(
            c.models[0].limits.kv_cache,
            Some(KvCacheSize::Bytes(want)),
            "{text}"
        );
    }
    assert!(err(&one("kv_cache_bytes = \"512MB\"")).contains("MiB"));
    assert!(err(&one("kv_cache_bytes = \"lots\"")).contains("kv_cache_bytes"));
    assert!(err(&one("kv_cache_bytes = -5")).contains("negative"));
    assert!(err(&one("kv_cache_bytes = 0")).contains("must not be 0"));
    assert!(err(&one("kv_cache_bytes = \"99999999999TiB\"")).contains("2^64"));
    let e = err(&one("kv_cache_tokens = 4096\nkv_cache_bytes = \"1GiB\""));
    assert!(e.contains("mutually exclusive"), "{e}");
    assert_eq!(parse_byte_size("3 tib"), Ok(3 << 40));
}

#[test]
fn out_of_range_values_name_the_limit() {
    let cases = [
        ("max_num_seqs = 0", "`max_num_seqs`", "between 1 and 1024"),
        (
            "max_num_seqs = 2000",
            "`max_num_seqs`",
            "between 1 and 1024",
        ),
        (
            "max_num_batched_tokens = 8",
            "`max_num_batched_tokens`",
            "between 16 and",
        ),
        ("block_size = 12", "`block_size`", "power of two"),
        ("block_size = 512", "`block_size`", "between 1 and 256"),
        ("max_waiting = 0", "`max_waiting`", "between 1 and"),
        (
            "request_timeout_secs = 0",
            "`request_timeout_secs`",
            "between 1 and 86400",
        ),
        ("max_model_len = 0", "`max_model_len`", "between 1 and"),
        ("kv_cache_tokens = 8", "`kv_cache_tokens`", "at least 16"),
        (
            "max_num_seqs = 64\nmax_num_batched_tokens = 32",
            "`max_num_batched_tokens`",
            "at least max_num_seqs (64)",
        ),
        (
            "max_model_len = 1024\nkv_cache_tokens = 512",
            "`kv_cache_tokens`",
            "at least 1024",
        ),
    ];
    for (extra, key, limit) in cases {
        let e = err(&one(extra));
        assert!(e.contains(key) && e.contains(limit), "{extra}: {e}");
        assert!(e.starts_with("models.toml: model \"m\""), "{e}");
    }
    let ok = one("max_model_len = 1024\nkv_cache_tokens = 1024\nblock_size = 32\nmax_num_seqs = 1024\nmax_num_batched_tokens = 1024");
    assert!(parse(&ok).is_ok());
}

#[test]
fn resolve_checks_local_paths() {
    let dir = std::env::temp_dir().join(format!("inferd-cfg-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("st")).unwrap();
    std::fs::write(dir.join("ok.gguf"), b"GGUF\x03\0\0\0").unwrap();
    std::fs::write(dir.join("bad.gguf"), b"PK\x03\x04").unwrap();
    let text = "[[model]]\nid = \"ok\"\npath = \"ok.gguf\"\n[[model]]\nid = \"bad\"\npath = \"bad.gguf\"\n\
                [[model]]\nid = \"gone\"\npath = \"gone.gguf\"\n[[model]]\nid = \"st\"\npath = \"st\"\n";
    let c = parse_catalog(text, &dir, dir.join("models.toml")).unwrap();
    let r = |id: &str| resolve(c.get(id).unwrap());
    assert_eq!(r("ok").unwrap(), ResolvedModel::Gguf(dir.join("ok.gguf")));
    assert!(r("bad")
        .unwrap_err()
        .to_string()
        .contains("not a GGUF file"));
    assert!(r("gone")
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    assert!(r("st").unwrap_err().to_string().contains("config.json"));
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::write(dir.join("st").join(f), b"{}").unwrap();
    }
    assert_eq!(
        r("st").unwrap(),
        ResolvedModel::SafetensorsDir(dir.join("st"))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn device_and_gpu_memory_utilization() {
    let m = &parse(&one("")).unwrap().models[0];
    assert_eq!(m.placement, Placement::default());
    assert_eq!(m.placement.device, DeviceSpec::Auto);
    assert_eq!(m.placement.gpu_memory_utilization.get(), 0.9);
    let m = &parse(&one("device = \"cuda:1\"\ngpu_memory_utilization = 0.5"))
        .unwrap()
        .models[0];
    assert_eq!(m.placement.device, DeviceSpec::Cuda(Some(1)));
    assert_eq!(m.placement.gpu_memory_utilization.get(), 0.5);
    assert!(!m.placement.enforce_eager, "CUDA graphs by default");
    let m = &parse(&one("enforce_eager = true")).unwrap().models[0];
    assert!(m.placement.enforce_eager);
    let e = err(&one("enforce_eager = 1"));
    assert!(e.contains("enforce_eager"), "{e}");
    let e = err(&one("device = \"gpu\""));
    assert!(e.contains("model \"m\": invalid `device`"), "{e}");
    assert!(e.contains("\"cuda:N\""), "{e}");
    let e = err(&one("gpu_memory_utilization = 1.5"));
    assert!(e.contains("invalid `gpu_memory_utilization`"), "{e}");
    let e = err(&one("device = 1"));
    assert!(e.contains("device"), "{e}");
}
