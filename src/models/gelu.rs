//! The tanh-approximated GELU (`gelu_new`, T5 v1.1's and mT5's gated feed-forward) on the CPU in
//! f32, vectorized, and fused with the gate's product.
//!
//! Why: candle computes it with one call to the C library's scalar `tanhf` per value, and a
//! T5-base encoder takes 2,048 of them per position and layer (500 positions x 12 layers per
//! input): about 12% of a summary's time went there. A gated block also took three more passes
//! over memory (two copies for the halves, one product). Here one pass reads each value and its
//! gate and writes `gelu(v) * g`, eight values at a time with AVX2, rows in parallel.
//!
//! Exactness: the GELU is candle's own expression, operation for operation (`0.5 * v * (1 +
//! tanh(sqrt(2/pi) * v * (1 + 0.044715 * v * v)))`), with the C library's tanh replaced by
//! [`tanh`], and the gate multiplied after, as candle does. [`tanh`] is at most 1.52 units in
//! the last place from the exact value (against f64 tanh, on every f32 in [-10, 10], see the
//! tests; beyond, it is +-1 as the exact value rounds), about as close as glibc's `tanhf`, but not always the same value, so
//! outputs can move by a rounding; every parity test (transformers' ids on every fixture)
//! passes with it. The AVX2 kernel and the portable one perform the same IEEE operations in the
//! same order (no fused multiply-add), so they give bit-identical results, and a model gives
//! the same outputs on every CPU.
//!
//! Safety: the AVX2 kernel exists only on x86-64, and only [`Kernel::available`] (run-time
//! detection) creates a [`Kernel`] naming it.

/// Values per parallel task (rows are split into runs of about this many values).
const VALUES_PER_TASK: usize = 32 * 1024;

/// A kernel this CPU runs: only run-time detection creates one (its field is private).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    isa: Isa,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Scalar code: the same values on any CPU.
    Portable,
}

impl Kernel {
    /// Every kernel this CPU runs, best first; the portable one always last.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            kernels.push(Kernel { isa: Isa::Avx2 });
        }
        kernels.push(Kernel { isa: Isa::Portable });
        kernels
    }

    /// The best kernel this CPU runs (detected once).
    pub fn detect() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// `out[i] = gelu(v[i])`, times `gate[i]` when given. Slices of one length.
    fn run(self, v: &[f32], gate: Option<&[f32]>, out: &mut [f32]) {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::Avx2` exists only after `avx2` was detected.
            Isa::Avx2 => unsafe { x86::gelu_avx2(v, gate, out) },
            Isa::Portable => portable(v, gate, out),
        }
    }
}

/// `gelu(x)` for every value of `x`, rows in parallel.
pub fn gelu(x: &[f32]) -> Vec<f32> {
    gelu_with(Kernel::detect(), x)
}

/// `gelu(h[.., ..d_ff]) * h[.., d_ff..]` for rows `h` of `2 * d_ff` values (the gated block's
/// fused up-projection: gate half first), giving rows of `d_ff` values.
pub fn gated_gelu(h: &[f32], d_ff: usize) -> Vec<f32> {
    gated_gelu_with(Kernel::detect(), h, d_ff)
}

fn gelu_with(kernel: Kernel, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let chunk = VALUES_PER_TASK;
    crate::parallel::for_each_chunk_mut(&mut out, chunk, |i, out| {
        kernel.run(&x[i * chunk..][..out.len()], None, out)
    });
    out
}

fn gated_gelu_with(kernel: Kernel, h: &[f32], d_ff: usize) -> Vec<f32> {
    let d_ff = d_ff.max(1);
    let rows = h.len() / (2 * d_ff);
    let mut out = vec![0f32; rows * d_ff];
    let per_task = (VALUES_PER_TASK / d_ff).max(1);
    crate::parallel::for_each_chunk_mut(&mut out, per_task * d_ff, |i, out| {
        let h = &h[i * per_task * 2 * d_ff..][..2 * out.len()];
        for (out, h) in out.chunks_mut(d_ff).zip(h.chunks(2 * d_ff)) {
            let (v, gate) = h.split_at(d_ff);
            kernel.run(v, Some(gate), out);
        }
    });
    out
}

fn portable(v: &[f32], gate: Option<&[f32]>, out: &mut [f32]) {
    match gate {
        Some(gate) => {
            for ((o, &x), &g) in out.iter_mut().zip(v).zip(gate) {
                *o = gelu_one(x) * g;
            }
        }
        None => {
            for (o, &x) in out.iter_mut().zip(v) {
                *o = gelu_one(x);
            }
        }
    }
}

/// sqrt(2 / pi), as candle writes it.
const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;

/// candle's `gelu` (the tanh approximation), with [`tanh`].
#[inline(always)]
fn gelu_one(v: f32) -> f32 {
    0.5 * v * (1.0 + tanh(SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v)))
}

/// Below this magnitude tanh is an odd polynomial; from it on, `(1 - e) / (1 + e)` with
/// `e = exp(-2|x|)`, where `1 - e` loses no precision (`e <= 0.33`).
const SMALL: f32 = 0.5625;
/// Magnitudes are clamped here before the exponential: tanh is 1.0 in f32 from about 9.01 on,
/// and exp(-80) is still a normal f32.
const CLAMP: f32 = 40.0;
/// tanh(x) = x + x^3 P(x^2) on |x| < SMALL: P's coefficients, constant term first (a weighted
/// least-squares fit to the relative error, made for this module).
const TANH_P: [f32; 5] = [
    -0.333_333_16,
    0.133_325_86,
    -0.053_851_753,
    0.021_067_05,
    -0.006_264_162,
];
/// exp(r) = 1 + r + r^2 Q(r) on |r| <= ln(2)/2: Q's coefficients, constant term first (fitted
/// the same way).
const EXP_Q: [f32; 5] = [
    0.499_999_9,
    0.166_665_42,
    0.041_669_21,
    0.008_366_138,
    0.001_375_297_2,
];
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two: the first is 0.693359375 (few significant bits), so `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// tanh in f32, at most 1.52 units in the last place from the exact value; NaN for NaN, +-1 for
/// +-infinity. The AVX2 kernel computes the same operations on eight values at once.
pub fn tanh(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let z = x * x;
    let mut p = TANH_P[4];
    for &c in TANH_P[..4].iter().rev() {
        p = p * z + c;
    }
    let small = x + x * z * p;
    // e = exp(-2a) = 2^n exp(r), r = y - n ln 2
    let y = -2.0 * a.min(CLAMP);
    let n = (y * LOG2_E).round_ties_even();
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let mut q = EXP_Q[4];
    for &c in EXP_Q[..4].iter().rev() {
        q = q * r + c;
    }
    let e = (1.0 + (r + r * r * q)) * f32::from_bits(((n as i32 + 127) as u32) << 23);
    let large = ((1.0 - e) / (1.0 + e)).copysign(x);
    if a < SMALL {
        small
    } else {
        large
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::*;

    /// As `portable`, eight values at a time.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2; `v`, `gate` (when given) and `out` have one length.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gelu_avx2(v: &[f32], gate: Option<&[f32]>, out: &mut [f32]) {
        let main = out.len().min(v.len()) / 8 * 8;
        let gate_main = gate.map(|g| &g[..main]);
        // SAFETY: every load and store below is within the first `main` values of slices at
        // least that long (the gate's checked by the slicing above); the CPU has AVX2.
        unsafe {
            let half = _mm256_set1_ps(0.5);
            let one = _mm256_set1_ps(1.0);
            let c = _mm256_set1_ps(SQRT_TWO_OVER_PI);
            let k = _mm256_set1_ps(0.044715);
            for i in (0..main).step_by(8) {
                let x = _mm256_loadu_ps(v.as_ptr().add(i));
                // 0.5 * v * (1 + tanh(c * v * (1 + k * v * v))), left to right as candle
                let inner = _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(k, x), x));
                let t = tanh8(_mm256_mul_ps(_mm256_mul_ps(c, x), inner));
                let mut y = _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, t));
                if let Some(g) = gate_main {
                    y = _mm256_mul_ps(y, _mm256_loadu_ps(g.as_ptr().add(i)));
                }
                _mm256_storeu_ps(out.as_mut_ptr().add(i), y);
            }
        }
        super::portable(&v[main..], gate.map(|g| &g[main..]), &mut out[main..]);
    }

    /// `super::tanh` on eight lanes: the same operations in the same order.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn tanh8(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let a = _mm256_andnot_ps(sign, x);
        let z = _mm256_mul_ps(x, x);
        let mut p = _mm256_set1_ps(TANH_P[4]);
        for &c in TANH_P[..4].iter().rev() {
            p = _mm256_add_ps(_mm256_mul_ps(p, z), _mm256_set1_ps(c));
        }
        let small = _mm256_add_ps(x, _mm256_mul_ps(_mm256_mul_ps(x, z), p));
        let clamped = _mm256_min_ps(a, _mm256_set1_ps(CLAMP));
        let y = _mm256_mul_ps(_mm256_set1_ps(-2.0), clamped);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(y, _mm256_set1_ps(LOG2_E)),
        );
        let r = _mm256_sub_ps(
            _mm256_sub_ps(y, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
            _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
        );
        let mut q = _mm256_set1_ps(EXP_Q[4]);
        for &c in EXP_Q[..4].iter().rev() {
            q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(c));
        }
        let one = _mm256_set1_ps(1.0);
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        let e = _mm256_mul_ps(
            _mm256_add_ps(one, _mm256_add_ps(r, _mm256_mul_ps(_mm256_mul_ps(r, r), q))),
            scale,
        );
        let large = _mm256_div_ps(_mm256_sub_ps(one, e), _mm256_add_ps(one, e));
        let large = _mm256_or_ps(large, _mm256_and_ps(sign, x));
        let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(SMALL));
        let t = _mm256_blendv_ps(large, small, is_small);
        let is_nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
        _mm256_blendv_ps(t, x, is_nan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place of `exact`'s f32 rounding between `got` and `exact`.
    fn ulps(got: f32, exact: f64) -> f64 {
        let rounded = exact as f32;
        let ulp = (f32::from_bits(rounded.abs().to_bits() + 1) - rounded.abs()) as f64;
        (got as f64 - exact).abs() / ulp
    }

    /// Every `step`-th f32 in [-10, 10] (by bit pattern), both signs, and the special values.
    fn samples(step: u32) -> Vec<f32> {
        let top = 10f32.to_bits();
        let mut xs: Vec<f32> = (0..=top)
            .step_by(step as usize)
            .map(f32::from_bits)
            .flat_map(|x| [x, -x])
            .collect();
        xs.extend([
            0.0,
            -0.0,
            SMALL,
            -SMALL,
            9.0,
            9.02,
            40.0,
            1e30,
            f32::MAX,
            f32::MIN,
        ]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, 1e-40]);
        xs
    }

    /// The bound in the doc comments. Every positive f32 up to 10 (1.09 billion values; tanh is
    /// odd, and both branches keep the sign) was checked once through a NumPy replica of these
    /// f32 operations: the largest error was 1.519 ulp, at 1.2128117. The test samples.
    #[test]
    fn tanh_is_within_a_ulp_and_a_half() {
        let mut worst = (0f64, 0f32);
        for x in samples(1009) {
            let err = ulps(tanh(x), (x as f64).tanh());
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 1.52, "{} ulp at {}", worst.0, worst.1);
        let x = 1.212_811_7f32;
        let err = ulps(tanh(x), (x as f64).tanh());
        assert!(
            err > 1.5 && err <= 1.52,
            "{err} ulp at the worst value found"
        );
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(20.0), 1.0);
    }

    /// Every kernel of this CPU gives the portable kernel's bits, with and without a gate,
    /// at lengths that leave tails.
    #[test]
    fn kernels_agree_bit_for_bit() {
        let mut xs = samples(4099);
        xs.push(f32::NAN);
        let len = xs.len() / 2 * 2 - 3;
        let gate: Vec<f32> = xs.iter().rev().map(|&g| g.clamp(-3.0, 3.0)).collect();
        let mut want = vec![0f32; len];
        let mut want_gated = vec![0f32; len];
        portable(&xs[..len], None, &mut want);
        portable(&xs[..len], Some(&gate[..len]), &mut want_gated);
        for kernel in Kernel::available() {
            let mut got = vec![0f32; len];
            kernel.run(&xs[..len], None, &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{kernel:?}");
            kernel.run(&xs[..len], Some(&gate[..len]), &mut got);
            assert_eq!(bits(&got), bits(&want_gated), "{kernel:?} gated");
        }
    }

    /// The fused gated block equals gelu of the first half times the second, row by row, and
    /// the GELU stays within a few f32 roundings of f64's.
    #[test]
    fn gated_rows_take_the_gate_from_their_second_half() {
        let (rows, d_ff) = (37, 1000);
        let h: Vec<f32> = (0..rows * 2 * d_ff)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 150.0)
            .collect();
        let out = gated_gelu(&h, d_ff);
        assert_eq!(out.len(), rows * d_ff);
        for r in 0..rows {
            for j in 0..d_ff {
                let (v, g) = (h[r * 2 * d_ff + j], h[r * 2 * d_ff + d_ff + j]);
                assert_eq!(out[r * d_ff + j].to_bits(), (gelu_one(v) * g).to_bits());
                let v64 = v as f64;
                let exact = 0.5
                    * v64
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v64 + 0.044715 * v64.powi(3)))
                            .tanh());
                assert!((gelu_one(v) as f64 - exact).abs() <= 1e-6 * exact.abs().max(1.0));
            }
        }
        let plain = gelu(&h[..2 * d_ff + 5]);
        assert!(plain
            .iter()
            .zip(&h)
            .all(|(&y, &x)| y.to_bits() == gelu_one(x).to_bits()));
    }
}
