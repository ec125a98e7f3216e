//! `embedding` against `reference::embedding`: bitwise (it only moves values), out-of-range
//! ids give zero rows.

use inferd_kernels::cuda::ops::embedding::EmbeddingKernels;
use inferd_kernels::reference::embedding::embedding;

use crate::common::Rng;
use crate::harness::*;

#[test]
fn embedding_matches_the_spec() {
    let gpu = gpu();
    for dtype in DTYPES {
        let kernels = EmbeddingKernels::new(gpu, dtype).unwrap();
        for (vocab, hidden, tokens) in [(49_152, 576, 37), (1000, 2048, 5), (3, 4096, 1)] {
            let mut rng = Rng::new(vocab as u64);
            let table: Vec<f32> = (0..vocab * hidden).map(|_| rng.unit()).collect();
            let table = round(dtype, &table);
            let mut ids: Vec<u32> = (0..tokens).map(|_| rng.below(vocab) as u32).collect();
            ids[0] = (vocab - 1) as u32;
            if tokens > 2 {
                ids[1] = vocab as u32; // just out of range
                ids[2] = u32::MAX;
            }
            let mut want = vec![0f32; tokens * hidden];
            embedding(&table, hidden, &ids, &mut want);
            let (gt, gi) = (upload_f(dtype, &table), upload(&ids));
            let mut out = upload_f(dtype, &vec![1.0; tokens * hidden]);
            kernels
                .embedding(
                    gpu,
                    vocab,
                    hidden,
                    tokens,
                    &gt.as_view(),
                    &gi.as_view(),
                    &mut out.as_view_mut(),
                )
                .unwrap();
            assert_eq!(
                download_f(dtype, &out),
                want,
                "{dtype:?} [{vocab}, {hidden}]"
            );
        }
    }
}
