//! f32 linear layers on the CPU through OpenBLAS's `cblas_sgemm` (cargo feature `openblas`).
//!
//! The linear layers are most of a decoder step's work (the 512 x 62,518 output layer alone is
//! 59% of opus-mt's arithmetic). On this project's 2-core AVX-512 machine, a 64-sentence decode
//! takes about 30% less CPU time with OpenBLAS's AVX-512 sgemm than with candle's gemm crate
//! (greedy 6.5 s instead of 9.2 s, beam 4 17.7 s instead of 24.5 s, both threads together).
//! OpenBLAS is declared here by hand, three functions, instead of through a crate: the system
//! library (Debian: `libopenblas-dev`) is linked only when the feature is on, and every other
//! product (attention, f16/bf16, other devices) stays on candle.
//!
//! Threads: `--threads` sizes rayon's pool, and each product is cut into that many column
//! blocks, each a single-threaded sgemm on a rayon thread; OpenBLAS's own pool is set to one
//! thread. Measured with both on this machine (64 sentences, 2 threads): OpenBLAS's pool of
//! `--threads` threads, whose idle workers spin on sched_yield between products while candle's
//! element-wise ops want the same cores, cost 25% more CPU time (greedy 7.8 s instead of 6.3 s,
//! beam 4 21.8 s instead of 17.2 s) for no gain in wall time.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::sync::Once;

use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;

#[link(name = "openblas")]
extern "C" {
    fn cblas_sgemm(
        order: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
    fn openblas_set_num_threads(threads: c_int);
    fn openblas_get_corename() -> *const c_char;
}

// CBLAS enum values (cblas.h).
const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// Prepares OpenBLAS once, before its first product: its kernels, and one thread of its own.
fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        prefer_avx512_kernels();
        // SAFETY: plain setter. The parallelism is rayon's (see `Product::run_parallel`).
        unsafe { openblas_set_num_threads(1) };
    });
}

/// Switches a runtime-dispatched ("DYNAMIC_ARCH") OpenBLAS from its AVX2 kernels to its
/// AVX-512 ones ("SkylakeX") on a CPU that has AVX-512 but that the library does not know:
/// Debian 12's OpenBLAS 0.3.21 takes Zen 4/5 for "Haswell", and its SkylakeX kernels are
/// measured about 30% faster there. Left alone when the library picked anything else (also when
/// `OPENBLAS_CORETYPE` forced another core; the library itself sets that variable to its choice,
/// so a forced Haswell or Zen cannot be told apart) or was built for one CPU (no dispatch
/// functions).
fn prefer_avx512_kernels() {
    if !has_avx512() {
        return;
    }
    // SAFETY: returns a static NUL-terminated name.
    let core = unsafe { CStr::from_ptr(openblas_get_corename()) };
    if core.to_bytes() != b"Haswell" && core.to_bytes() != b"Zen" {
        return;
    }
    let lookup = |name: &CStr| {
        // SAFETY: dlsym with a NUL-terminated name; null when the symbol is absent.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!f.is_null()).then(|| {
            // SAFETY: both functions are `void f(void)` in OpenBLAS's dynamic.c.
            unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(f) }
        })
    };
    let (Some(quit), Some(init)) = (
        lookup(c"gotoblas_dynamic_quit"),
        lookup(c"gotoblas_dynamic_init"),
    ) else {
        return;
    };
    // gotoblas_dynamic_init reads the variable; quit first so that it chooses again.
    std::env::set_var("OPENBLAS_CORETYPE", "SkylakeX");
    quit();
    init();
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` on the f32 elements of a contiguous CPU tensor, if it is one.
fn with_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> Result<Option<T>> {
    if t.dtype() != DType::F32 || !t.is_contiguous() {
        return Ok(None);
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let start = layout.start_offset();
    let all = cpu.as_slice::<f32>()?;
    Ok(Some(f(&all[start..start + layout.shape().elem_count()])))
}

/// `x Wᵀ + b` for `x` (rows, inputs) and `weight` (outputs, inputs), all f32 on the CPU; `None`
/// when an operand is not (the caller then takes candle's path).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (rows, inputs) = x.dims2()?;
    let (outputs, weight_inputs) = weight.dims2()?;
    init();
    let empty = rows == 0 || outputs == 0 || inputs == 0;
    if empty || inputs != weight_inputs || !x.device().is_cpu() {
        return Ok(None);
    }
    let dims = [rows, outputs, inputs].map(c_int::try_from);
    let [Ok(m), Ok(n), Ok(k)] = dims else {
        return Ok(None);
    };
    // The bias is written into every output row first and sgemm adds the product (beta = 1).
    let mut out = match bias {
        None => vec![0f32; rows * outputs],
        Some(b) => match with_f32(b, |b| b.repeat(rows))? {
            Some(filled) if filled.len() == rows * outputs => filled,
            _ => return Ok(None),
        },
    };
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    let x = x.contiguous()?;
    let done = with_f32(&x, |a| {
        with_f32(weight, |w| {
            let product = Product {
                rows: m,
                inputs: k,
                outputs: n,
                a,
                w,
                beta,
            };
            product.run_parallel(&mut out);
        })
    })?
    .transpose()?;
    if done.flatten().is_none() {
        return Ok(None);
    }
    Tensor::from_vec(out, (rows, outputs), x.device()).map(Some)
}

/// One `out = a wᵀ + beta out` product, row-major: a (rows, inputs), w (outputs, inputs),
/// out (rows, outputs).
struct Product<'a> {
    rows: c_int,
    inputs: c_int,
    outputs: c_int,
    a: &'a [f32],
    w: &'a [f32],
    beta: f32,
}

/// The output buffer shared by the column blocks; each writes only its own columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: the blocks write disjoint columns of the buffer, which outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl Product<'_> {
    /// Splits the output columns (weight rows) into one block per rayon thread, each a
    /// single-threaded sgemm.
    fn run_parallel(&self, out: &mut [f32]) {
        const MIN_BLOCK: usize = 64;
        let outputs = self.outputs as usize;
        let blocks = rayon::current_num_threads()
            .min(outputs.div_ceil(MIN_BLOCK))
            .max(1);
        let width = outputs.div_ceil(blocks).next_multiple_of(16);
        let shared = SharedOut(out.as_mut_ptr());
        (0..outputs)
            .step_by(width)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|first| {
                let cols = width.min(outputs - first);
                // SAFETY: columns first..first + cols of every row of `out` belong to this
                // block alone; a and w hold rows x inputs and outputs x inputs values.
                unsafe { self.block(first, cols, shared) }
            });
    }

    /// Columns `first..first + cols` of the output.
    unsafe fn block(&self, first: usize, cols: usize, out: SharedOut) {
        let k = self.inputs;
        cblas_sgemm(
            ROW_MAJOR,
            NO_TRANS,
            TRANS,
            self.rows,
            cols as c_int,
            k,
            1.0,
            self.a.as_ptr(),
            k,
            self.w.as_ptr().add(first * k as usize),
            k,
            self.beta,
            out.0.add(first),
            self.outputs,
        )
    }
}
