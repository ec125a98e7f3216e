mod common;

use candle_core::Device;
use candle_core::{DType, Tensor};
use common::{assert_close, randn, Rng};
use inferd_kernels::{reshape_and_cache, reshape_and_cache_slow, KernelError};

fn case(num_blocks: usize, block_size: usize, kv: usize, d: usize, tokens: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut slots: Vec<u32> = (0..(num_blocks * block_size) as u32).collect();
    rng.shuffle(&mut slots);
    slots.truncate(tokens);
    let kc = randn(&mut rng, &[num_blocks, block_size, kv, d]);
    let vc = randn(&mut rng, &[num_blocks, block_size, kv, d]);
    let k = randn(&mut rng, &[tokens, kv, d]);
    let v = randn(&mut rng, &[tokens, kv, d]);
    let sm = Tensor::new(slots.as_slice(), &Device::Cpu).unwrap();
    let (ks, vs) = reshape_and_cache_slow(&k, &v, &kc, &vc, &sm).unwrap();
    reshape_and_cache(&k, &v, &kc, &vc, &sm).unwrap();
    assert_close(&kc, &ks, 0.0);
    assert_close(&vc, &vs, 0.0);
    // Every written slot holds exactly its token's row.
    let flat = kc.reshape((num_blocks * block_size, kv * d)).unwrap();
    for (t, &s) in slots.iter().enumerate() {
        let got = flat.get(s as usize).unwrap();
        let want = k.get(t).unwrap().flatten_all().unwrap();
        assert_close(&got, &want, 0.0);
    }
}

#[test]
fn fast_matches_slow() {
    case(8, 16, 2, 64, 37, 1);
    case(5, 4, 3, 8, 20, 2);
    case(3, 4, 1, 5, 1, 3);
    case(6, 16, 4, 32, 0, 4);
}

#[test]
fn out_of_range_slot_is_rejected() {
    let mut rng = Rng::new(9);
    let kc = randn(&mut rng, &[2, 4, 1, 8]);
    let vc = kc.copy().unwrap();
    let before = kc.to_vec3::<f32>().ok();
    let k = randn(&mut rng, &[2, 1, 8]);
    let sm = Tensor::new(&[3u32, 8], &Device::Cpu).unwrap();
    let err = reshape_and_cache(&k, &k, &kc, &vc, &sm).unwrap_err();
    assert!(
        matches!(
            err,
            KernelError::OutOfRange {
                index: 1,
                value: 8,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(before, kc.to_vec3::<f32>().ok());
}

#[test]
fn bad_arguments_are_typed_errors() {
    let mut rng = Rng::new(10);
    let kc = randn(&mut rng, &[2, 4, 2, 8]);
    let k = randn(&mut rng, &[2, 2, 8]);
    let sm = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
    let e = reshape_and_cache(&k.to_dtype(DType::F16).unwrap(), &k, &kc, &kc, &sm);
    assert!(matches!(e, Err(KernelError::DType { name: "key", .. })));
    let kc4 = randn(&mut rng, &[2, 4, 2, 4]);
    let e = reshape_and_cache(&k, &k, &kc4, &kc, &sm);
    assert!(matches!(
        e,
        Err(KernelError::Shape {
            name: "key_cache",
            ..
        })
    ));
    let kt = k
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
        .transpose(0, 1)
        .unwrap();
    let e = reshape_and_cache(&kt, &k, &kc, &kc, &sm);
    assert!(matches!(
        e,
        Err(KernelError::NotContiguous { name: "key", .. })
    ));
    let sm3 = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
    let e = reshape_and_cache(&k, &k, &kc, &kc, &sm3);
    assert!(matches!(
        e,
        Err(KernelError::Shape {
            name: "slot_mapping",
            ..
        })
    ));
    let e: candle_core::Error = KernelError::Device { op: "test" }.into();
    assert!(e.to_string().contains("device"));
}
