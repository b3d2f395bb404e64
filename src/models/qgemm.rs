//! int8 products `x Wᵀ (+ b)` for the linear layers under `--dtype int8` on the CPU: the weight
//! quantized once at load time (symmetric, one f32 scale per output feature), each input row
//! quantized when the product runs (symmetric, one scale per row), the dot products summed
//! exactly in 32-bit integers, and only the result scaled back to f32.
//!
//! Why: a decoder step is bound by reading the weights (the 512 x 62,518 output layer of opus-mt
//! is 128 MB in f32), and one int8 instruction does four times the multiply-adds of an f32 one.
//! int8 trades a little fidelity for that speed, which is why it is a choice and f32 the default.
//!
//! Safety: as in [`super::gemm`], the SIMD kernels exist only on x86-64, and only
//! [`QKernel::detect`] and [`QKernel::available`] create a [`QKernel`] naming one, after asking
//! the CPU, so the safe [`QuantizedMatrix::quantize`] and [`QuantizedMatrix::matmul_t`] never run
//! an instruction the CPU lacks. The portable kernel computes the same integers in scalar code on
//! every target; it is slow but keeps `--dtype int8` working everywhere.
//!
//! Layout: the rows of W (output features) are cut into panels of [`PANEL`]; a panel is stored
//! as groups of [`GROUP`] consecutive inputs, each group holding the four bytes of every column
//! one after the other (128 bytes, 64-byte aligned): exactly what `vpdpbusd` multiplies into
//! one 32-bit lane per column. The inputs are zero-padded to whole groups.
//!
//! The kernels: `vpdpbusd` (AVX-512 VNNI on zmm, AVX-VNNI on ymm) multiplies unsigned by signed
//! bytes, so the VNNI kernels take each input as `q + 128` and subtract `128 · Σₖ w` per column,
//! a sum computed at load time; the AVX2 kernel instead moves the input's sign onto the weight
//! (`|q| · sign(q)·w`, whose pairs never saturate `vpmaddubsw`: 2 · 127 · 127 < 2¹⁵). Either way
//! each output's 32-bit sum is the exact integer dot product.
//!
//! Exactness: the integer sums are exact, each row is quantized on its own, and every output is
//! then `((sum as f32) · row scale) · column scale (+ bias)`, in that order, by every kernel. So
//! a row's outputs are bit-identical whatever else is in the batch, wherever it sits and
//! whichever kernel ran: a sentence translates the same alone or in any batch.

use rayon::prelude::*;

/// Output features per panel: two AVX-512 registers of 16 32-bit lanes.
const PANEL: usize = 32;
/// Inputs per 32-bit lane of `vpdpbusd`.
const GROUP: usize = 4;
/// Bytes of a panel's group: [`GROUP`] bytes for each of its [`PANEL`] columns.
const GROUP_BYTES: usize = PANEL * GROUP;
/// Bytes of quantized input multiplied by a run of panels before the next rows (half an L2).
const ROW_BLOCK_BYTES: usize = 256 * 1024;
/// Rows quantized per task when the input is large enough to split.
const QUANTIZE_ROWS_PER_TASK: usize = 64;
/// Adding and subtracting 1.5 · 2²³ rounds an f32 of magnitude below 2²² to the nearest integer,
/// ties to even, in plain SSE2 arithmetic (so the loops vectorize on every x86-64).
const ROUNDER: f32 = 12_582_912.0;

/// An int8 kernel this CPU runs: a token that only run-time detection creates (its field is
/// private), so holding one proves the CPU has the instructions it uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct QKernel {
    isa: Isa,
}

/// The instruction sets with a kernel; the SIMD ones exist only where they can be compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// `vpdpbusd` on 512-bit registers.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit registers (VEX encoded: Alder Lake, Zen 5 and later).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// `vpmaddubsw` + `vpmaddwd` on 256-bit registers.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Scalar integer arithmetic: the same values, on any CPU, slowly.
    Portable,
}

impl QKernel {
    /// The best kernel this CPU runs (the portable one where no SIMD kernel does).
    pub fn detect() -> QKernel {
        Self::available()[0]
    }

    /// Every kernel this CPU runs, best first; the portable one always comes last. Tests
    /// compare them.
    pub fn available() -> Vec<QKernel> {
        #[cfg(target_arch = "x86_64")]
        let simd = {
            use std::arch::is_x86_feature_detected as has;
            [
                (has!("avx512f") && has!("avx512vnni"), Isa::Avx512Vnni),
                (has!("avx2") && has!("avxvnni"), Isa::AvxVnni),
                (has!("avx2"), Isa::Avx2),
            ]
        };
        #[cfg(not(target_arch = "x86_64"))]
        let simd: [(bool, Isa); 0] = [];
        let detected = simd.into_iter().filter(|&(has, _)| has).map(|(_, isa)| isa);
        detected
            .chain([Isa::Portable])
            .map(|isa| QKernel { isa })
            .collect()
    }

    /// "Avx512Vnni", "AvxVnni", "Avx2" or "Portable".
    pub fn name(self) -> &'static str {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => "Avx512Vnni",
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => "AvxVnni",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "Avx2",
            Isa::Portable => "Portable",
        }
    }

    /// Whether the kernel reads inputs as `q + 128` (unsigned bytes) and so needs the column
    /// sums subtracted.
    fn unsigned_inputs(self) -> bool {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni | Isa::AvxVnni => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => false,
            Isa::Portable => false,
        }
    }

    /// The most rows one kernel call handles (its register tile's height).
    fn tall(self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => 12,
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => 6,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 4,
            Isa::Portable => 12,
        }
    }

    /// Runs the kernel on one tile of `rows` rows.
    ///
    /// # Safety
    ///
    /// `t` must point to valid memory as [`Tile`] describes it for `rows` rows
    /// (`1..=tall()`), with the inputs encoded as [`QKernel::unsigned_inputs`] says, and `rows`
    /// output rows of `cols` values that nothing else reads or writes meanwhile. The instruction
    /// set is guaranteed by `self`, which only detection creates.
    unsafe fn run(self, t: Tile, rows: usize) {
        match self.isa {
            // SAFETY: the caller guarantees the memory; `Isa::Avx512Vnni` exists only after
            // `avx512f` and `avx512vnni` were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => unsafe { x86::vnni512_tile(t, rows) },
            // SAFETY: as above, after `avx2` and `avxvnni` were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => unsafe { x86::vnni256_tile(t, rows) },
            // SAFETY: as above, after `avx2` was detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_tile(t, rows) },
            // SAFETY: the caller guarantees the memory; plain scalar code.
            Isa::Portable => unsafe { portable_tile(t, rows) },
        }
    }
}

impl std::fmt::Debug for QKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One 64-byte cache line of int8 values: the unit of the packed storage, for its alignment.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([i8; 64]);

/// A (rows, cols) weight matrix quantized to int8 in panel order; see the module doc.
pub struct QuantizedMatrix {
    lines: Vec<Line>,
    /// One scale per row of W (output feature), padded with zeros to whole panels.
    scales: Vec<f32>,
    /// `128 · Σₖ w` per row of W, padded to whole panels (the VNNI kernels' correction).
    offsets: Vec<i32>,
    rows: usize,
    cols: usize,
    /// Groups of [`GROUP`] inputs per row, the last zero-padded.
    groups: usize,
    kernel: QKernel,
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("kernel", &self.kernel)
            .finish()
    }
}

/// Quantizes `x` symmetrically to `out` (same length): `round(x · 127 / max|x|)`, ties to even;
/// returns the scale `max|x| / 127` that maps the integers back (0 for a row of zeros).
pub fn quantize_row(x: &[f32], out: &mut [i8]) -> f32 {
    // The largest magnitude, through the bits: for floats that are not NaN, the order of
    // |x|'s bit patterns is the order of the values, and an integer maximum vectorizes.
    let amax_bits = x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    let amax = f32::from_bits(amax_bits);
    if amax == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / amax;
    for (o, &v) in out.iter_mut().zip(x) {
        let q = ((v * inv).clamp(-127.0, 127.0) + ROUNDER) - ROUNDER;
        *o = q as i8;
    }
    amax / 127.0
}

impl QuantizedMatrix {
    /// Quantizes the row-major (rows, cols) f32 matrix `w` row by row and packs it for
    /// `kernel`, on rayon's threads (opus-mt's 77 M weights take well under a second).
    pub fn quantize(w: &[f32], rows: usize, cols: usize, kernel: QKernel) -> Self {
        assert_eq!(w.len(), rows * cols, "weight size");
        let panels = rows.div_ceil(PANEL);
        let groups = cols.div_ceil(GROUP);
        let panel_bytes = groups * GROUP_BYTES;
        let mut lines = vec![Line([0; 64]); panels * panel_bytes / 64];
        let mut scales = vec![0f32; panels * PANEL];
        let mut offsets = vec![0i32; panels * PANEL];
        if cols > 0 {
            as_bytes_mut(&mut lines)
                .par_chunks_mut(panel_bytes)
                .zip(scales.par_chunks_mut(PANEL))
                .zip(offsets.par_chunks_mut(PANEL))
                .enumerate()
                .for_each(|(p, ((panel, scales), offsets))| {
                    // One row at a time, zero-padded to whole groups, then spread a group (four
                    // bytes, one 32-bit move) at a time into its column's place.
                    let mut q = vec![0i8; groups * GROUP];
                    for lane in 0..PANEL.min(rows - p * PANEL) {
                        let src = &w[(p * PANEL + lane) * cols..][..cols];
                        scales[lane] = quantize_row(src, &mut q[..cols]);
                        offsets[lane] = 128 * q.iter().map(|&v| i32::from(v)).sum::<i32>();
                        let at = lane * GROUP..(lane + 1) * GROUP;
                        for (group, four) in panel
                            .chunks_exact_mut(GROUP_BYTES)
                            .zip(q.chunks_exact(GROUP))
                        {
                            group[at.clone()].copy_from_slice(four);
                        }
                    }
                });
        }
        Self {
            lines,
            scales,
            offsets,
            rows,
            cols,
            groups,
            kernel,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn kernel(&self) -> QKernel {
        self.kernel
    }

    /// Bytes held: the int8 values, scales and column sums.
    pub fn bytes(&self) -> usize {
        self.lines.len() * 64 + self.scales.len() * 4 + self.offsets.len() * 4
    }

    fn values(&self) -> &[i8] {
        as_bytes(&self.lines)
    }

    /// `x Wᵀ + bias` for `x` row-major (m, cols); returns (m, rows) row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "input size");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias size");
        }
        let n = self.rows;
        if m == 0 || n == 0 {
            return vec![0f32; m * n];
        }
        let (inputs, row_scales) = self.quantize_inputs(x, m);
        // Every output is written once by the kernels; zero-filling first would cost a pass
        // over (for the output layer) tens of MiB per decoder step.
        let mut out = Vec::with_capacity(m * n);
        let panels = n.div_ceil(PANEL);
        // A few tasks per thread even out the work when threads are interrupted.
        let per_task = panels.div_ceil(rayon::current_num_threads() * 4).max(1);
        let shared = SharedOut(out.as_mut_ptr());
        let inputs = QuantizedInputs {
            bytes: &inputs,
            scales: &row_scales,
            m,
        };
        crate::parallel::for_each(panels.div_ceil(per_task), |task| {
            let first = task * per_task;
            let last = (first + per_task).min(panels);
            // SAFETY: this task alone writes the columns of panels first..last, `out` holds
            // m x n values and outlives the tasks; the inputs (m rows of whole groups, m
            // scales), the bias (n values, checked above) and the panels are read in bounds.
            unsafe { self.panels(&inputs, first..last, bias, shared) }
        });
        // SAFETY: the tasks above wrote all m x n values: the panels cover all n columns, the
        // row blocks all m rows, and every kernel (the portable one included, so on every
        // target) writes each valid column of each of its rows.
        unsafe { out.set_len(m * n) };
        out
    }

    /// The rows of `x` quantized (whole groups, zero-padded; as `q + 128` for the VNNI
    /// kernels) and their scales, in parallel for large inputs (an encoder's thousands of rows).
    fn quantize_inputs(&self, x: &[f32], m: usize) -> (Vec<i8>, Vec<f32>) {
        let k = self.cols;
        let stride = self.groups * GROUP;
        let flip = self.kernel.unsigned_inputs();
        let mut bytes = vec![0i8; m * stride];
        let mut scales = vec![0f32; m];
        let one = |(row, (q, s)): (usize, (&mut [i8], &mut f32))| {
            *s = quantize_row(&x[row * k..(row + 1) * k], &mut q[..k]);
            if flip {
                // q + 128 as an unsigned byte is q with its top bit flipped; padding becomes
                // 128 too, which meets zero weights.
                q.iter_mut().for_each(|v| *v = (*v as u8 ^ 0x80) as i8);
            }
        };
        let chunks = bytes.chunks_mut(stride.max(1)).zip(scales.iter_mut());
        if m * k >= QUANTIZE_ROWS_PER_TASK * 1024 {
            bytes
                .par_chunks_mut(stride.max(1))
                .zip(scales.par_iter_mut())
                .enumerate()
                .with_min_len(QUANTIZE_ROWS_PER_TASK)
                .for_each(one);
        } else {
            chunks.enumerate().for_each(one);
        }
        (bytes, scales)
    }

    /// Output columns of `panels` for every input row.
    ///
    /// # Safety
    ///
    /// `inputs` must hold `m` rows of `groups * GROUP` bytes encoded for this matrix's kernel
    /// and `m` scales, `bias` (when set) `rows` values, `panels` must lie within the matrix's
    /// panels, and `out` must point to `m * rows` writable values whose columns of these
    /// panels no one else touches during the call.
    unsafe fn panels(
        &self,
        inputs: &QuantizedInputs,
        panels: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        out: SharedOut,
    ) {
        let (m, n) = (inputs.m, self.rows);
        let stride = self.groups * GROUP;
        let tall = self.kernel.tall();
        let row_block = (ROW_BLOCK_BYTES / stride.max(1))
            .max(1)
            .next_multiple_of(12);
        for block in (0..m).step_by(row_block) {
            let block_end = (block + row_block).min(m);
            for p in panels.clone() {
                let col = p * PANEL;
                let mut row = block;
                while row < block_end {
                    let now = (block_end - row).min(tall);
                    // SAFETY: row < m, p < panels and col < n, so every offset stays inside
                    // the inputs, their scales, the packed values, the column scales and sums
                    // (padded to whole panels), the output and the bias (the caller's sizes).
                    let tile = unsafe {
                        Tile {
                            a: inputs.bytes.as_ptr().add(row * stride),
                            lda: stride,
                            a_scales: inputs.scales.as_ptr().add(row),
                            b: self.values().as_ptr().add(p * self.groups * GROUP_BYTES),
                            groups: self.groups,
                            b_scales: self.scales.as_ptr().add(col),
                            offsets: self.offsets.as_ptr().add(col),
                            c: out.0.add(row * n + col),
                            ldc: n,
                            cols: (n - col).min(PANEL),
                            bias: bias.map(|b| b.as_ptr().add(col)),
                        }
                    };
                    // SAFETY: the tile lies in bounds as above, `now` is 1..=tall, and its rows
                    // and columns are this call's own (the caller's guarantee).
                    unsafe { self.kernel.run(tile, now) };
                    row += now;
                }
            }
        }
    }
}

/// Input rows quantized for one product.
struct QuantizedInputs<'a> {
    bytes: &'a [i8],
    scales: &'a [f32],
    m: usize,
}

/// Pointers of one kernel call: `rows` x `cols` outputs from one panel.
#[derive(Clone, Copy)]
struct Tile {
    /// First quantized input row, `lda` bytes apart (whole groups).
    a: *const i8,
    lda: usize,
    /// The scale of each input row.
    a_scales: *const f32,
    /// The panel: `groups` groups of [`GROUP_BYTES`], 64-byte aligned.
    b: *const i8,
    groups: usize,
    /// The scales and column sums of the panel's [`PANEL`] columns (padded).
    b_scales: *const f32,
    offsets: *const i32,
    /// First output, rows `ldc` values apart.
    c: *mut f32,
    ldc: usize,
    /// Valid columns of the panel (fewer than [`PANEL`] in the last one).
    cols: usize,
    /// The bias of the panel's first column.
    bias: Option<*const f32>,
}

impl Tile {
    /// The f32 output of an exact integer dot product: `((sum as f32) · row scale) · column
    /// scale`, the one order every kernel rounds in.
    ///
    /// # Safety
    ///
    /// `r` must be one of the tile's rows and `j` below [`PANEL`].
    #[inline(always)]
    unsafe fn dequantize(&self, r: usize, j: usize, sum: i32) -> f32 {
        // SAFETY: within the row scales and the panel's padded column scales (the caller's).
        unsafe { (sum as f32 * *self.a_scales.add(r)) * *self.b_scales.add(j) }
    }

    /// Writes `values` (`width` columns from column `from` of tile row `r`) with the bias added,
    /// skipping columns past `cols`. Scalar adds round exactly as vector adds do.
    ///
    /// # Safety
    ///
    /// Row `r` must be one of the tile's rows, with its `cols` outputs (and bias values, when
    /// set) valid for writing (reading).
    #[cfg(target_arch = "x86_64")]
    unsafe fn store_partial(&self, r: usize, from: usize, values: &[f32]) {
        let valid = self.cols.saturating_sub(from).min(values.len());
        for (j, &v) in values[..valid].iter().enumerate() {
            // SAFETY: from + j < cols: within the bias and the output row (the caller's).
            unsafe {
                let out = self.c.add(r * self.ldc + from + j);
                *out = match self.bias {
                    Some(b) => v + *b.add(from + j),
                    None => v,
                };
            }
        }
    }
}

/// The portable kernel: for each output, the exact integer dot product of the signed inputs
/// and weights, dequantized and biased as the SIMD kernels do it.
///
/// # Safety
///
/// As [`QKernel::run`]: `t` must describe valid memory for `rows` rows of signed inputs.
unsafe fn portable_tile(t: Tile, rows: usize) {
    for r in 0..rows {
        for j in 0..t.cols {
            let mut sum = 0i32;
            for g in 0..t.groups {
                for i in 0..GROUP {
                    // SAFETY: r < rows, g < groups, i < GROUP and j < cols <= PANEL: inside the
                    // input row and the panel.
                    let (a, b) = unsafe {
                        (
                            *t.a.add(r * t.lda + g * GROUP + i),
                            *t.b.add(g * GROUP_BYTES + j * GROUP + i),
                        )
                    };
                    sum += i32::from(a) * i32::from(b);
                }
            }
            // SAFETY: as above, inside the scales, the bias and the output row.
            unsafe {
                let v = t.dequantize(r, j, sum);
                *t.c.add(r * t.ldc + j) = match t.bias {
                    Some(b) => v + *b.add(j),
                    None => v,
                };
            }
        }
    }
}

/// The output buffer shared by tasks that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each task writes only its own columns; the buffer outlives the tasks.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

fn as_bytes(lines: &[Line]) -> &[i8] {
    // SAFETY: Line is 64 i8 with no padding (repr C, size 64).
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<i8>(), lines.len() * 64) }
}

fn as_bytes_mut(lines: &mut [Line]) -> &mut [i8] {
    // SAFETY: as in `as_bytes`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<i8>(), lines.len() * 64) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, GROUP, GROUP_BYTES};
    use std::arch::x86_64::*;

    /// Calls `$kernel::<R>` for the run-time row count `$rows` (1..=max).
    macro_rules! by_rows {
        ($kernel:ident, $tile:expr, $rows:expr, [$($r:literal)*]) => {
            match $rows {
                $($r => $kernel::<$r>($tile),)*
                _ => unreachable!("tile of {} rows", $rows),
            }
        };
    }

    /// The four input bytes of group `g` of row `r`, as one 32-bit value.
    ///
    /// # Safety
    ///
    /// Row `r` of the tile must hold group `g`.
    #[inline(always)]
    unsafe fn four(t: &Tile, r: usize, g: usize) -> i32 {
        // SAFETY: the caller's guarantee; the read may be unaligned.
        unsafe {
            t.a.add(r * t.lda + g * GROUP)
                .cast::<i32>()
                .read_unaligned()
        }
    }

    /// The tile split into halves of 16 columns (64 bytes of each group), for the 256-bit
    /// kernels; `run` is called for each half that has valid columns.
    ///
    /// # Safety
    ///
    /// `t` must describe valid memory as `Tile` says; `run` receives tiles that do too.
    #[inline(always)]
    unsafe fn halves(t: Tile, mut run: impl FnMut(Tile)) {
        for half in [0, 16] {
            // SAFETY: a group holds PANEL = 32 columns and the scales and column sums are
            // padded to whole panels; the bias is only read below `cols`.
            let t = unsafe {
                Tile {
                    b: t.b.add(half * GROUP),
                    b_scales: t.b_scales.add(half),
                    offsets: t.offsets.add(half),
                    c: t.c.add(half),
                    cols: t.cols.saturating_sub(half),
                    bias: t.bias.map(|b| b.add(half)),
                    ..t
                }
            };
            if t.cols > 0 {
                run(t);
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must support `avx512f` and `avx512vnni`, `rows` must be 1..=12, and `t` must
    /// describe valid memory for `rows` rows of unsigned inputs (see `QKernel::run`).
    pub(super) unsafe fn vnni512_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { by_rows!(vnni512, t, rows, [1 2 3 4 5 6 7 8 9 10 11 12]) }
    }

    /// # Safety
    ///
    /// The CPU must support `avx2` and `avxvnni`, `rows` must be 1..=6, and `t` must describe
    /// valid memory for `rows` rows of unsigned inputs (see `QKernel::run`).
    pub(super) unsafe fn vnni256_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on for each half panel.
        unsafe { halves(t, |t| by_rows!(vnni256, t, rows, [1 2 3 4 5 6])) }
    }

    /// # Safety
    ///
    /// The CPU must support `avx2`, `rows` must be 1..=4, and `t` must describe valid memory
    /// for `rows` rows of signed inputs (see `QKernel::run`).
    pub(super) unsafe fn avx2_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on for each half panel.
        unsafe { halves(t, |t| by_rows!(avx2, t, rows, [1 2 3 4])) }
    }

    /// R rows x 32 columns: 2R accumulators of 16 lanes.
    ///
    /// # Safety
    ///
    /// As `vnni512_tile`, with R rows.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn vnni512<const R: usize>(t: Tile) {
        // SAFETY: the caller guarantees the CPU features and that every pointer read or
        // written below (R input rows, the panel, the padded scales and sums, the bias below
        // `cols`, R output rows) is valid; the panel loads are aligned (64-byte lines).
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            for g in 0..t.groups {
                let b0 = _mm512_load_si512(t.b.add(g * GROUP_BYTES).cast());
                let b1 = _mm512_load_si512(t.b.add(g * GROUP_BYTES + 64).cast());
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_epi32(four(&t, r, g));
                    row[0] = _mm512_dpbusd_epi32(row[0], a, b0);
                    row[1] = _mm512_dpbusd_epi32(row[1], a, b1);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let a_scale = _mm512_set1_ps(*t.a_scales.add(r));
                for (v, &reg) in row.iter().enumerate() {
                    let from = v * 16;
                    let sum = _mm512_sub_epi32(reg, _mm512_loadu_si512(t.offsets.add(from).cast()));
                    let y = _mm512_mul_ps(
                        _mm512_mul_ps(_mm512_cvtepi32_ps(sum), a_scale),
                        _mm512_loadu_ps(t.b_scales.add(from)),
                    );
                    if t.cols >= from + 16 {
                        let y = match t.bias {
                            Some(b) => _mm512_add_ps(y, _mm512_loadu_ps(b.add(from))),
                            None => y,
                        };
                        _mm512_storeu_ps(t.c.add(r * t.ldc + from), y);
                    } else {
                        let mut lanes = [0f32; 16];
                        _mm512_storeu_ps(lanes.as_mut_ptr(), y);
                        t.store_partial(r, from, &lanes);
                    }
                }
            }
        }
    }

    /// The 256-bit epilogue: dequantizes `sums` (8 columns from `from` of row `r`) and stores
    /// them with the bias.
    ///
    /// # Safety
    ///
    /// The CPU must support `avx2`; row `r` and the columns as `Tile::store_partial` requires,
    /// with the scales (and, when `offsets`, the column sums) padded to whole panels.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store8(t: &Tile, r: usize, from: usize, sums: __m256i, offsets: bool) {
        // SAFETY: the caller's guarantees.
        unsafe {
            let sums = match offsets {
                true => _mm256_sub_epi32(sums, _mm256_loadu_si256(t.offsets.add(from).cast())),
                false => sums,
            };
            let y = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(*t.a_scales.add(r))),
                _mm256_loadu_ps(t.b_scales.add(from)),
            );
            if t.cols >= from + 8 {
                let y = match t.bias {
                    Some(b) => _mm256_add_ps(y, _mm256_loadu_ps(b.add(from))),
                    None => y,
                };
                _mm256_storeu_ps(t.c.add(r * t.ldc + from), y);
            } else {
                let mut lanes = [0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), y);
                t.store_partial(r, from, &lanes);
            }
        }
    }

    /// R rows x 16 columns (half a panel): 2R accumulators of 8 lanes, `vpdpbusd` on ymm.
    ///
    /// # Safety
    ///
    /// As `vnni256_tile`, with R rows, for half a panel.
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn vnni256<const R: usize>(t: Tile) {
        // SAFETY: as in `vnni512`; the panel loads are aligned (offsets of 32 bytes within
        // 64-byte lines).
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for g in 0..t.groups {
                let b0 = _mm256_load_si256(t.b.add(g * GROUP_BYTES).cast());
                let b1 = _mm256_load_si256(t.b.add(g * GROUP_BYTES + 32).cast());
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_epi32(four(&t, r, g));
                    row[0] = _mm256_dpbusd_avx_epi32(row[0], a, b0);
                    row[1] = _mm256_dpbusd_avx_epi32(row[1], a, b1);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &reg) in row.iter().enumerate() {
                    store8(&t, r, v * 8, reg, true);
                }
            }
        }
    }

    /// R rows x 16 columns (half a panel): 2R accumulators of 8 lanes; each product is
    /// `|a| · (sign(a) · w)` through `vpmaddubsw` (pairs at most 2 · 127 · 127, never saturated)
    /// and `vpmaddwd` by ones.
    ///
    /// # Safety
    ///
    /// As `avx2_tile`, with R rows, for half a panel.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<const R: usize>(t: Tile) {
        // SAFETY: as in `vnni256`.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for g in 0..t.groups {
                let b0 = _mm256_load_si256(t.b.add(g * GROUP_BYTES).cast());
                let b1 = _mm256_load_si256(t.b.add(g * GROUP_BYTES + 32).cast());
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_epi32(four(&t, r, g));
                    let magnitude = _mm256_abs_epi8(a);
                    for (sum, b) in row.iter_mut().zip([b0, b1]) {
                        let pairs = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(b, a));
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &reg) in row.iter().enumerate() {
                    store8(&t, r, v * 8, reg, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::gemm::tests::values;

    /// The same integer arithmetic in the plainest form: rows of x and of W quantized with
    /// [`quantize_row`], exact i32 dot products, dequantized in the one order.
    fn reference(
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let quantize = |rows: &[f32], count: usize| {
            let mut q = vec![0i8; count * k];
            let scales: Vec<f32> = (0..count)
                .map(|i| quantize_row(&rows[i * k..(i + 1) * k], &mut q[i * k..(i + 1) * k]))
                .collect();
            (q, scales)
        };
        let (qx, sx) = quantize(x, m);
        let (qw, sw) = quantize(w, n);
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let sum: i32 = (0..k)
                    .map(|kk| i32::from(qx[i * k + kk]) * i32::from(qw[j * k + kk]))
                    .sum();
                let y = (sum as f32 * sx[i]) * sw[j];
                out[i * n + j] = match bias {
                    Some(b) => y + b[j],
                    None => y,
                };
            }
        }
        out
    }

    /// Every kernel of this CPU; never empty, since the portable kernel runs everywhere.
    fn kernels() -> Vec<QKernel> {
        let kernels = QKernel::available();
        assert_eq!(kernels.last().map(|k| k.name()), Some("Portable"));
        kernels
    }

    #[test]
    fn detection_offers_what_the_cpu_has() {
        let names: Vec<&str> = kernels().iter().map(|k| k.name()).collect();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let vnni512 = has!("avx512f") && has!("avx512vnni");
            assert_eq!(names.contains(&"Avx512Vnni"), vnni512);
            assert_eq!(names.contains(&"AvxVnni"), has!("avx2") && has!("avxvnni"));
            assert_eq!(names.contains(&"Avx2"), has!("avx2"));
            if vnni512 {
                assert_eq!(QKernel::detect().name(), "Avx512Vnni");
            }
        }
        assert_eq!(names.first(), Some(&QKernel::detect().name()));
    }

    #[test]
    fn every_kernel_matches_the_integer_reference_bit_for_bit() {
        for kernel in kernels() {
            for (m, n, k) in [
                (1, 1, 1),
                (13, 33, 7),
                (25, 70, 19),
                (100, 65, 40),
                (3, 31, 64),
                (1, 97, 2048),
                (7, 16, 5),
                (30, 48, 130),
            ] {
                let x = values(m * k, 1);
                let w = values(n * k, 2);
                let b = values(n, 3);
                let packed = QuantizedMatrix::quantize(&w, n, k, kernel);
                for bias in [None, Some(b.as_slice())] {
                    let got = packed.matmul_t(&x, m, bias);
                    let want = reference(&x, &w, m, n, k, bias);
                    let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    let want_bits: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got_bits, want_bits, "{kernel:?} {m}x{n}x{k}");
                }
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate_any_kernel() {
        // Every input and weight at ±127 after quantization, signs arranged so that the AVX2
        // kernel's pairs reach 2 · 127 · 127 and the VNNI kernels' unsigned inputs 255.
        let (m, n, k) = (5, 40, 300);
        let x: Vec<f32> = (0..m * k)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| if i % 3 == 0 { -2.0 } else { 2.0 })
            .collect();
        let want = reference(&x, &w, m, n, k, None);
        for kernel in kernels() {
            let got = QuantizedMatrix::quantize(&w, n, k, kernel).matmul_t(&x, m, None);
            assert_eq!(got, want, "{kernel:?}");
        }
    }

    #[test]
    fn a_row_gets_the_same_outputs_alone_and_in_a_batch() {
        for kernel in kernels() {
            let (m, n, k) = (64, 97, 48);
            let x = values(m * k, 4);
            let packed = QuantizedMatrix::quantize(&values(n * k, 5), n, k, kernel);
            let batch = packed.matmul_t(&x, m, None);
            for i in [0, 3, 4, 5, 11, 12, 63] {
                let alone = packed.matmul_t(&x[i * k..(i + 1) * k], 1, None);
                assert_eq!(alone, batch[i * n..(i + 1) * n], "{kernel:?} row {i}");
            }
        }
    }

    #[test]
    fn large_inputs_are_quantized_in_parallel_the_same_way() {
        // Enough rows to take the parallel path, compared with one row at a time.
        let kernel = QKernel::detect();
        let (m, n, k) = (300, 20, 512);
        let x = values(m * k, 8);
        let packed = QuantizedMatrix::quantize(&values(n * k, 9), n, k, kernel);
        let batch = packed.matmul_t(&x, m, None);
        for i in [0, 63, 64, 299] {
            let alone = packed.matmul_t(&x[i * k..(i + 1) * k], 1, None);
            assert_eq!(alone, batch[i * n..(i + 1) * n], "row {i}");
        }
    }

    #[test]
    fn products_stay_close_to_f32() {
        let (m, n, k) = (8, 50, 256);
        let x = values(m * k, 6);
        let w = values(n * k, 7);
        let got = QuantizedMatrix::quantize(&w, n, k, QKernel::detect()).matmul_t(&x, m, None);
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|kk| x[i * k + kk] * w[j * k + kk]).sum();
                // Each factor is off by at most half a step (max / 254); the sum of k such
                // products by far less than k times that in the worst case.
                assert!((got[i * n + j] - exact).abs() < 0.05, "{i},{j}");
            }
        }
    }

    #[test]
    fn quantize_row_is_symmetric_and_handles_zero_rows() {
        let mut q = [0i8; 4];
        let scale = quantize_row(&[0.5, -1.0, 0.25, 1.0 / 254.0], &mut q);
        assert_eq!(scale, 1.0 / 127.0);
        // 63.5 and 0.5 round to even.
        assert_eq!(q, [64, -127, 32, 0]);
        assert_eq!(quantize_row(&[0.0, -0.0], &mut q[..2]), 0.0);
        assert_eq!(q[..2], [0, 0]);
    }
}
