//! `expf` of the C library (glibc), bit for bit, eight values at a time.
//!
//! Why bit for bit: candle's ops and transformers' reference values come from the C library's
//! `expf` (candle's unary ops call it per value), and mtsum's host code must give the same
//! values as the candle ops it replaces (softmax of an attention, SiLU of a feed-forward block).
//! Why here: one libm call per value, with a register save around each, was 3-6% of a decoder
//! step (the cross-attention softmax of a T5 step over 5 beams x ~500 positions; opus-mt's
//! SiLU over 64 rows x 2,048 features per layer).

/// `expf` of every value, in place: the C library's very bits on every input, eight at a
/// time with AVX-512 where the CPU has it ([`x86::exp_avx512`]), else through the C library.
pub(super) fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { x86::exp_avx512(values) };
    }
    values.iter_mut().for_each(|v| *v = v.exp());
}

/// SiLU of every value, in place, as candle's op computes it (`v / (1 + expf(-v))`, candle-core
/// 0.11's `Silu`): the same bits, eight at a time with AVX-512 where the CPU has it.
pub(super) fn silu_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F, checked just above.
        return unsafe { x86::silu_avx512(values) };
    }
    values.iter_mut().for_each(|v| *v = silu(*v));
}

/// candle's SiLU of one value.
#[inline(always)]
fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

#[cfg(target_arch = "x86_64")]
pub(in crate::models) mod x86 {
    use std::arch::x86_64::*;

    /// `expf` of glibc (2.27 and later; e_expf.c, from Arm's optimized-routines) in AVX-512,
    /// eight values at a time, in place: `2^(k/32) * p(r)` in f64 with its table and
    /// polynomial, operation for operation (fused multiply-adds where its FMA build has them),
    /// so that it returns the C library's very bits: checked on every f32 (2^32 inputs, none
    /// differ) by the release build's tests, and on a sample of them by every build's.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::models) unsafe fn exp_avx512(values: &mut [f32]) {
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 8 values; the CPU supports AVX-512F (the caller's).
            unsafe {
                let x = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), exp8(x));
            }
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut lanes = [0f32; 8];
            lanes[..rest.len()].copy_from_slice(rest);
            // SAFETY: `lanes` holds 8 values; the CPU supports AVX-512F (the caller's).
            unsafe {
                let y = exp8(_mm256_loadu_ps(lanes.as_ptr()));
                _mm256_storeu_ps(lanes.as_mut_ptr(), y);
            }
            rest.copy_from_slice(&lanes[..rest.len()]);
        }
    }

    /// glibc's `__exp2f_data.tab`: `bits(2^(i/32)) - (i << 47)`.
    const EXP_TABLE: [u64; 32] = [
        0x3ff0000000000000,
        0x3fefd9b0d3158574,
        0x3fefb5586cf9890f,
        0x3fef9301d0125b51,
        0x3fef72b83c7d517b,
        0x3fef54873168b9aa,
        0x3fef387a6e756238,
        0x3fef1e9df51fdee1,
        0x3fef06fe0a31b715,
        0x3feef1a7373aa9cb,
        0x3feedea64c123422,
        0x3feece086061892d,
        0x3feebfdad5362a27,
        0x3feeb42b569d4f82,
        0x3feeab07dd485429,
        0x3feea47eb03a5585,
        0x3feea09e667f3bcd,
        0x3fee9f75e8ec5f74,
        0x3feea11473eb0187,
        0x3feea589994cce13,
        0x3feeace5422aa0db,
        0x3feeb737b0cdc5e5,
        0x3feec49182a3f090,
        0x3feed503b23e255d,
        0x3feee89f995ad3ad,
        0x3feeff76f2fb5e47,
        0x3fef199bdd85529c,
        0x3fef3720dcef9069,
        0x3fef5818dcfba487,
        0x3fef7c97337b9b5f,
        0x3fefa4afa2a490da,
        0x3fefd0765b6e4540,
    ];

    /// Eight `expf`s; see [`exp_avx512`].
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp8(x: __m256) -> __m256 {
        const N: f64 = 32.0;
        // 0x1.8p52: adding it rounds to an integer (ties to even) in the low bits.
        const SHIFT: f64 = 6755399441055744.0;
        // 0x1.71547652b82fep0 * N, and the polynomial 0x1.c6af84b912394p-5 / N^3,
        // 0x1.ebfce50fac4f3p-3 / N^2, 0x1.62e42ff0c52d6p-1 / N.
        const INV_LN2_N: f64 = f64::from_bits(0x3ff71547652b82fe) * N;
        const C0: f64 = f64::from_bits(0x3fac6af84b912394) / (N * N * N);
        const C1: f64 = f64::from_bits(0x3fcebfce50fac4f3) / (N * N);
        const C2: f64 = f64::from_bits(0x3fe62e42ff0c52d6) / N;
        // Below log(2^-150) the result is 0, above log(2^128) infinity (glibc's bounds).
        const LOWEST: f32 = f32::from_bits(0xc2cff1b4); // -0x1.9fe368p6
        const HIGHEST: f32 = f32::from_bits(0x42b17217); // 0x1.62e42ep6
                                                         // SAFETY: register operations and reads of the local table; the CPU supports
                                                         // AVX-512F (the caller's guarantee).
        unsafe {
            let xd = _mm512_cvtps_pd(x);
            let kd_shifted = _mm512_fmadd_pd(_mm512_set1_pd(INV_LN2_N), xd, _mm512_set1_pd(SHIFT));
            let kd = _mm512_sub_pd(kd_shifted, _mm512_set1_pd(SHIFT));
            let r = _mm512_fmsub_pd(_mm512_set1_pd(INV_LN2_N), xd, kd);
            let ki = _mm512_castpd_si512(kd_shifted);
            let table = |at: usize| _mm512_loadu_si512(EXP_TABLE[at..].as_ptr().cast());
            // tab[ki % 32]: two 16-entry permutes, chosen by bit 4.
            let low = _mm512_permutex2var_epi64(table(0), ki, table(8));
            let high = _mm512_permutex2var_epi64(table(16), ki, table(24));
            let upper = _mm512_test_epi64_mask(ki, _mm512_set1_epi64(16));
            let t = _mm512_mask_blend_epi64(upper, low, high);
            let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64::<47>(ki)));
            let z = _mm512_fmadd_pd(_mm512_set1_pd(C0), r, _mm512_set1_pd(C1));
            let r2 = _mm512_mul_pd(r, r);
            let y = _mm512_fmadd_pd(_mm512_set1_pd(C2), r, _mm512_set1_pd(1.0));
            let y = _mm512_fmadd_pd(z, r2, y);
            let y = _mm512_cvtpd_ps(_mm512_mul_pd(y, s));
            // The edges as glibc returns them: 0 below, infinity above, x + x for a NaN.
            let y = _mm256_blendv_ps(
                y,
                _mm256_setzero_ps(),
                _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(LOWEST)),
            );
            let y = _mm256_blendv_ps(
                y,
                _mm256_set1_ps(f32::INFINITY),
                _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(HIGHEST)),
            );
            _mm256_blendv_ps(y, _mm256_add_ps(x, x), _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
        }
    }

    /// [`super::silu`] of every value, in place: `expf(-v)` by [`exp8`], then the same f32
    /// addition and division (one IEEE operation each, so the same bits in any width).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn silu_avx512(values: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        let mut chunks = values.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 8 values; the CPU supports AVX-512F (the caller's).
            unsafe {
                let v = _mm256_loadu_ps(chunk.as_ptr());
                let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
                _mm256_storeu_ps(chunk.as_mut_ptr(), _mm256_div_ps(v, _mm256_add_ps(one, e)));
            }
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|v| *v = super::silu(*v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs (as bit patterns) where [`x86::exp_avx512`] differs from `f32::exp` (the C
    /// library's `expf`): (x, ours, expf).
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    fn exp_mismatches(patterns: impl Iterator<Item = u32>) -> Vec<(f32, f32, f32)> {
        let xs: Vec<f32> = patterns.map(f32::from_bits).collect();
        let mut got = xs.clone();
        // SAFETY: the callers checked that the CPU supports AVX-512F.
        unsafe { x86::exp_avx512(&mut got) };
        let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
        xs.iter()
            .zip(&got)
            .filter(|&(x, y)| !same(x.exp(), *y))
            .map(|(&x, &y)| (x, y, x.exp()))
            .collect()
    }

    /// The AVX-512 exp is the C library's `expf`, bit for bit: a sample of every range here
    /// (every 251st negative float, every 4,093rd positive one, the edges), and every
    /// float in the release build's test below.
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    #[test]
    fn exp_avx512_is_the_c_librarys_expf() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let edges = [
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MIN,
            f32::MAX,
            -f32::MIN_POSITIVE,
            -1e-45,
            -87.33655,
            -88.0,
            -103.97207,
            f32::from_bits(0xc2cff1b4),
            f32::from_bits(0xc2cff1b5),
            f32::from_bits(0x42b17217),
            f32::from_bits(0x42b17218),
        ];
        let patterns = (0x8000_0000u32..=u32::MAX)
            .step_by(251)
            .chain((0..0x8000_0000u32).step_by(4093))
            .chain(edges.iter().map(|x: &f32| x.to_bits()));
        let bad = exp_mismatches(patterns);
        assert!(
            bad.is_empty(),
            "(x, ours, expf): {:?}",
            &bad[..bad.len().min(5)]
        );
    }

    /// Every f32, NaNs and infinities included (2^32 inputs; in the release build only, where
    /// it takes seconds: `cargo test --release --lib expf`).
    #[cfg(all(target_arch = "x86_64", target_env = "gnu", not(debug_assertions)))]
    #[test]
    fn exp_avx512_is_expf_on_every_float() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use rayon::prelude::*;
        let bad: Vec<_> = (0u32..=0xffff)
            .into_par_iter()
            .flat_map_iter(|high| exp_mismatches((high << 16..=(high << 16) | 0xffff).step_by(1)))
            .collect();
        assert!(
            bad.is_empty(),
            "(x, ours, expf): {:?}",
            &bad[..bad.len().min(5)]
        );
    }

    /// SiLU on the host is candle's op, bit for bit, on a sample of every range.
    #[test]
    fn silu_is_candles() {
        let xs: Vec<f32> = (0..u32::MAX)
            .step_by(65_521)
            .map(f32::from_bits)
            .chain([
                0.0,
                -0.0,
                88.0,
                -88.0,
                104.0,
                -104.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ])
            .collect();
        let mut ours = xs.clone();
        silu_in_place(&mut ours);
        let candle = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu)
            .and_then(|t| t.silu())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("candle's silu");
        for ((x, a), b) in xs.iter().zip(&ours).zip(&candle) {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "silu({x}): {a} here, {b} in candle"
            );
        }
    }
}
