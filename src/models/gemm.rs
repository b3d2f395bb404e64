//! f32 products `x Wᵀ (+ b)` for the linear layers on x86-64 CPUs, with each weight matrix
//! packed once, when the model loads, into the order the kernels read it.
//!
//! Safety: the SIMD kernels exist only on x86-64 (`cfg(target_arch)`), and only
//! [`Kernel::detect`] and [`Kernel::available`] hand out a [`Kernel`] naming one, after asking
//! the CPU; a [`Kernel`] cannot be built otherwise. So the safe [`PackedMatrix::pack`] and
//! [`PackedMatrix::matmul_t`] can never run an instruction the CPU lacks. The portable kernel,
//! compiled everywhere, computes the same chain in scalar code: tests and `gemm_bench` run it on
//! every CPU, and it is what keeps every output written on a CPU with no SIMD kernel.
//!
//! Why our own kernels: the linear layers are nearly all of a decoder step's arithmetic (the
//! 512 x 62,518 output layer of opus-mt alone is 59%), and the general-purpose GEMM behind
//! candle's CPU matmul re-packs the weight at every call. `cargo run --release --example
//! gemm_bench` compares the two on opus-mt's shapes: on this project's 2-core AMD EPYC (Zen 5,
//! AVX-512), 2 threads, these kernels run at 400-510 GFLOP/s for 64-256 rows, 2.1x candle's
//! matmul on the output layer at 64 rows and 2.1-8x on the 512 x 2,048 feed-forward layers.
//!
//! Layout: the weight's rows (output features) are cut into panels of [`PANEL`] rows; a panel is
//! stored transposed, input feature by input feature, [`PANEL`] values each, on 64-byte
//! boundaries. A kernel then reads one panel front to back while it accumulates a tile of up to
//! 12 (AVX-512) or 6 (AVX2) input rows by the panel's columns in registers.
//!
//! Exactness: every output is one fused multiply-add chain over the inputs in order, started
//! from zero, the bias added last. Its value does not depend on how many rows the product has,
//! where the row sits in the batch, or which kernel ran, so a sentence gets bit-identical
//! logits alone or in any batch (the engine's batch-invariance tests rely on it).

use rayon::prelude::*;

/// Output features per panel: two AVX-512 registers, four AVX2 registers.
const PANEL: usize = 32;
/// Values of `x` multiplied by a run of panels before the next rows (512 KiB: half an L2).
const ROW_BLOCK_VALUES: usize = 128 * 1024;

/// A kernel this CPU runs: a token that only run-time detection creates (its field is
/// private), so holding one proves the CPU has the instructions it uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    isa: Isa,
}

/// The instruction sets with a kernel; the SIMD ones exist only where they can be compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Scalar fused multiply-adds: the same values, on any CPU, slowly.
    Portable,
}

impl Kernel {
    /// The best SIMD kernel this CPU runs; `None` where only candle's own matmul is worth
    /// using (the portable kernel is too slow for models).
    pub fn detect() -> Option<Kernel> {
        Self::available()
            .into_iter()
            .find(|k| k.isa != Isa::Portable)
    }

    /// Every kernel this CPU runs, best first; the portable one always comes last. Tests and
    /// benchmarks compare them.
    pub fn available() -> Vec<Kernel> {
        #[cfg(target_arch = "x86_64")]
        let simd = [
            (std::arch::is_x86_feature_detected!("avx512f"), Isa::Avx512),
            (
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma"),
                Isa::Avx2,
            ),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let simd: [(bool, Isa); 0] = [];
        let detected = simd.into_iter().filter(|&(has, _)| has).map(|(_, isa)| isa);
        detected
            .chain([Isa::Portable])
            .map(|isa| Kernel { isa })
            .collect()
    }

    /// "Avx512", "Avx2" or "Portable".
    pub fn name(self) -> &'static str {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "Avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "Avx2",
            Isa::Portable => "Portable",
        }
    }

    /// Input rows one kernel call takes.
    fn tall(self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => 12,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => 6,
            Isa::Portable => 12,
        }
    }

    /// Runs the kernel on one tile of `rows` rows.
    ///
    /// # Safety
    ///
    /// `t` must point to valid memory as [`Tile`] describes it for `rows` rows (`1..=tall()`):
    /// `rows` input rows of `k` values `lda` apart, a panel of `k * PANEL` values on 64-byte
    /// boundaries, `bias` (when set) with `cols` values, and `rows` output rows of `cols`
    /// values `ldc` apart that nothing else reads or writes meanwhile. The instruction set is
    /// guaranteed by `self`, which only detection creates.
    unsafe fn run(self, t: Tile, rows: usize) {
        match self.isa {
            // SAFETY: the caller guarantees the memory; `Isa::Avx512` exists only after
            // `avx512f` was detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::avx512_tile(t, rows) },
            // SAFETY: as above, after `avx2` and `fma` were detected.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_tile(t, rows) },
            // SAFETY: the caller guarantees the memory; plain scalar code.
            Isa::Portable => unsafe { portable_tile(t, rows) },
        }
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One 64-byte cache line of values: the unit of the packed storage, for its alignment.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A (rows, cols) weight matrix in panel order; see the module doc.
pub struct PackedMatrix {
    lines: Vec<Line>,
    rows: usize,
    cols: usize,
    kernel: Kernel,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("kernel", &self.kernel)
            .finish()
    }
}

impl PackedMatrix {
    /// Packs the row-major (rows, cols) matrix `w` for `kernel`.
    pub fn pack(w: &[f32], rows: usize, cols: usize, kernel: Kernel) -> Self {
        assert_eq!(w.len(), rows * cols, "weight size");
        let panels = rows.div_ceil(PANEL);
        let mut lines = vec![Line([0.0; 16]); panels * cols * PANEL / 16];
        let mut packed = Self {
            lines: Vec::new(),
            rows,
            cols,
            kernel,
        };
        if cols > 0 {
            as_values_mut(&mut lines)
                .par_chunks_mut(cols * PANEL)
                .enumerate()
                .for_each(|(p, panel)| {
                    for lane in 0..PANEL.min(rows - p * PANEL) {
                        let src = &w[(p * PANEL + lane) * cols..][..cols];
                        for (k, &v) in src.iter().enumerate() {
                            panel[k * PANEL + lane] = v;
                        }
                    }
                });
        }
        packed.lines = lines;
        packed
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn values(&self) -> &[f32] {
        as_values(&self.lines)
    }

    /// Row `i` of the original matrix (an embedding lookup on a tied table).
    pub fn copy_row(&self, i: usize, out: &mut [f32]) {
        assert!(
            i < self.rows && out.len() == self.cols,
            "row {i} out of range"
        );
        let panel = &self.values()[(i / PANEL) * self.cols * PANEL..];
        let lane = i % PANEL;
        for (k, o) in out.iter_mut().enumerate() {
            *o = panel[k * PANEL + lane];
        }
    }

    /// `x Wᵀ + bias` for `x` row-major (m, cols); returns (m, rows) row-major.
    pub fn matmul_t(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "input size");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias size");
        }
        let n = self.rows;
        if m == 0 || n == 0 || self.cols == 0 {
            return vec![0f32; m * n];
        }
        // Every output is written once by the kernels; zero-filling first would cost a pass
        // over (for the output layer) tens of MiB per decoder step.
        let mut out = Vec::with_capacity(m * n);
        let panels = n.div_ceil(PANEL);
        // A few tasks per thread even out the work when threads are interrupted.
        let per_task = panels.div_ceil(rayon::current_num_threads() * 4).max(1);
        let shared = SharedOut(out.as_mut_ptr());
        crate::parallel::for_each(panels.div_ceil(per_task), |task| {
            let first = task * per_task;
            let last = (first + per_task).min(panels);
            // SAFETY: this task alone writes the columns of panels first..last, `out` holds
            // m x n values and outlives the tasks; x (m x cols, checked above), the bias
            // (n values, checked above) and the panels are read in bounds.
            unsafe { self.panels(x, m, first..last, bias, shared) }
        });
        // SAFETY: the tasks above wrote all m x n values: the panels cover all n columns, the
        // row blocks all m rows, and every kernel (the portable one included, so on every
        // target) writes each valid column of each of its rows.
        unsafe { out.set_len(m * n) };
        out
    }

    /// `x Wᵀ + bias` handed out a block of `block` output columns at a time (the last block
    /// narrower), never held whole: `f(first_column, values)` gets the block's (m, width)
    /// products row-major, on the threads of `crate::parallel::for_each`, each block once and in no set order. The values
    /// are those of [`Self::matmul_t`] bit for bit (the same chains). The output layer of a
    /// beam search uses it: its (hypotheses, vocabulary) product is reduced block by block
    /// while the block is still in cache, so the full logits matrix (64 MiB at 256 rows) is
    /// never written nor paged in.
    ///
    /// `block` must be a positive multiple of the panel width (32).
    pub fn matmul_t_blocks(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        block: usize,
        f: impl Fn(usize, &[f32]) + Sync,
    ) {
        assert!(
            block > 0 && block.is_multiple_of(PANEL),
            "blocks of whole panels"
        );
        assert_eq!(x.len(), m * self.cols, "input size");
        if let Some(b) = bias {
            assert_eq!(b.len(), self.rows, "bias size");
        }
        let n = self.rows;
        if m == 0 || n == 0 {
            return;
        }
        thread_local! {
            static BLOCK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        crate::parallel::for_each(n.div_ceil(block), |b| {
            let first = b * block;
            let width = (n - first).min(block);
            BLOCK.with_borrow_mut(|buffer| {
                buffer.resize(m * width, 0.0);
                if self.cols == 0 {
                    buffer.iter_mut().for_each(|v| *v = 0.0);
                } else {
                    let panels = first / PANEL..(first + width).div_ceil(PANEL);
                    // SAFETY: the view writes columns first..first+width of an (m, width)
                    // buffer, which this task alone holds; x (m x cols, checked above), the
                    // bias (n values) and the panels (within the matrix) are read in bounds.
                    unsafe { self.panels_into(x, m, panels, bias, buffer.as_mut_ptr(), width) };
                }
                f(first, &buffer[..m * width]);
            });
        });
    }

    /// Output columns of `panels` for every row of `x`, written to `out` (rows `ldc` apart,
    /// the first panel's first column at offset 0).
    ///
    /// # Safety
    ///
    /// As [`Self::panels`], with `out` pointing to `m` rows of `ldc` writable values that cover
    /// the panels' columns and that no one else touches during the call.
    unsafe fn panels_into(
        &self,
        x: &[f32],
        m: usize,
        panels: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        out: *mut f32,
        ldc: usize,
    ) {
        let (n, k) = (self.rows, self.cols);
        let first = panels.start * PANEL;
        let row_block = (ROW_BLOCK_VALUES / k).max(1).next_multiple_of(12);
        for block in (0..m).step_by(row_block) {
            let block_end = (block + row_block).min(m);
            for p in panels.clone() {
                let col = p * PANEL;
                // SAFETY: block < m, p lies within the matrix's panels and col - first < ldc:
                // every offset stays inside x, the packed values, out and the bias; the next
                // panel, when named, is one of this call's panels too.
                let tile = unsafe {
                    Tile {
                        a: x.as_ptr().add(block * k),
                        lda: k,
                        b: self.values().as_ptr().add(p * k * PANEL),
                        k,
                        c: out.add(block * ldc + col - first),
                        ldc,
                        cols: (n - col).min(PANEL),
                        bias: bias.map(|b| b.as_ptr().add(col)),
                        next: (p + 1 < panels.end)
                            .then(|| self.values().as_ptr().add((p + 1) * k * PANEL)),
                    }
                };
                // SAFETY: the tile lies in bounds as above, in the caller's own buffer.
                unsafe { self.kernel_rows(tile, block_end - block) };
            }
        }
    }

    /// Output columns of `panels` for every row of `x`.
    ///
    /// # Safety
    ///
    /// `x` must hold `m * cols` values, `bias` (when set) `rows` values, `panels` must lie
    /// within the matrix's panels, and `out` must point to `m * rows` writable values whose
    /// columns of these panels no one else touches during the call.
    unsafe fn panels(
        &self,
        x: &[f32],
        m: usize,
        panels: std::ops::Range<usize>,
        bias: Option<&[f32]>,
        out: SharedOut,
    ) {
        // SAFETY: the panels' first column lies within the `rows` columns of `out`'s rows, which
        // are `rows` values apart; the caller's guarantees are `panels_into`'s.
        unsafe {
            let first = out.0.add(panels.start * PANEL);
            self.panels_into(x, m, panels, bias, first, self.rows)
        }
    }

    /// Runs the kernel over `rows` rows of one panel, in tiles of as even a height as the
    /// kernel's tallest allows (20 rows: 10 + 10, not 12 + 8; 15: 8 + 7, not 12 + 3).
    ///
    /// Why even tiles and the prefetch: with a decoder step's few rows (a T5 beam search runs
    /// 15-20 hypotheses) the first tile streams the panel from memory and the later ones
    /// compute from cache, one after the other. The last tile prefetches the next panel
    /// (`tile.next`) while it computes, so memory and arithmetic overlap; even tiles leave no
    /// short tile that mostly waits. Each output's chain is unchanged (module doc).
    ///
    /// # Safety
    ///
    /// `tile` must describe valid memory for `rows` rows, as [`Kernel::run`] requires.
    unsafe fn kernel_rows(&self, tile: Tile, rows: usize) {
        let tiles = rows.div_ceil(self.kernel.tall());
        for i in 0..tiles {
            let (done, end) = (i * rows / tiles, (i + 1) * rows / tiles);
            // SAFETY: done < rows, so the offsets stay within the tile's rows.
            let t = unsafe {
                Tile {
                    a: tile.a.add(done * tile.lda),
                    c: tile.c.add(done * tile.ldc),
                    // One tile alone streams its own panel; prefetching another beside it
                    // only competes for the same memory.
                    next: tile.next.filter(|_| tiles > 1 && i + 1 == tiles),
                    ..tile
                }
            };
            // SAFETY: the rows done..end (at most `tall()`: tiles >= rows / tall) lie within
            // the caller's `rows` rows.
            unsafe { self.kernel.run(t, end - done) };
        }
    }
}

/// Pointers of one kernel call: `rows` x `cols` outputs from one panel.
#[derive(Clone, Copy)]
struct Tile {
    /// First input row, `lda` values apart.
    a: *const f32,
    lda: usize,
    /// The panel: `k` groups of [`PANEL`] values.
    b: *const f32,
    k: usize,
    /// First output, rows `ldc` values apart.
    c: *mut f32,
    ldc: usize,
    /// Valid columns of the panel (fewer than [`PANEL`] in the last one).
    cols: usize,
    /// The bias of the panel's first column.
    bias: Option<*const f32>,
    /// A panel (`k` groups of [`PANEL`] values) to prefetch while this tile computes.
    next: Option<*const f32>,
}

impl Tile {
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
                let b = self.bias.map_or(0.0, |b| *b.add(from + j));
                *self.c.add(r * self.ldc + from + j) = v + b;
            }
        }
    }
}

/// The portable kernel: for each output, one fused multiply-add chain over the inputs in
/// order, started from zero, the bias added last, exactly as the SIMD kernels compute it.
///
/// # Safety
///
/// As [`Kernel::run`]: `t` must describe valid memory for `rows` rows.
unsafe fn portable_tile(t: Tile, rows: usize) {
    for r in 0..rows {
        for j in 0..t.cols {
            let mut acc = 0f32;
            for kk in 0..t.k {
                // SAFETY: r < rows, kk < k and j < cols <= PANEL: inside the input row and
                // the panel.
                let (a, b) = unsafe { (*t.a.add(r * t.lda + kk), *t.b.add(kk * PANEL + j)) };
                acc = a.mul_add(b, acc);
            }
            // SAFETY: as above, inside the bias and the output row.
            unsafe {
                let bias = t.bias.map_or(0.0, |b| *b.add(j));
                *t.c.add(r * t.ldc + j) = acc + bias;
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

fn as_values(lines: &[Line]) -> &[f32] {
    // SAFETY: Line is 16 f32 with no padding (repr C, size 64 = 16 x 4).
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<f32>(), lines.len() * 16) }
}

fn as_values_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: as in `as_values`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), lines.len() * 16) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Tile, PANEL};
    use std::arch::x86_64::*;

    /// Calls `$kernel::<R>` for the run-time row count `$rows` (1..=max).
    macro_rules! by_rows {
        ($kernel:ident, $tile:expr, $rows:expr, [$($r:literal)*]) => {
            match $rows {
                $($r => $kernel::<$r>($tile),)*
                _ => unreachable!("tile of {} rows", $rows),
            }
        };
        ($kernel:ident, $tile:expr, $rows:expr, [$($r:literal)*], $flag:literal) => {
            match $rows {
                $($r => $kernel::<$r, $flag>($tile),)*
                _ => unreachable!("tile of {} rows", $rows),
            }
        };
    }

    /// # Safety
    ///
    /// The CPU must support `avx512f`, `rows` must be 1..=12, and `t` must describe valid
    /// memory for `rows` rows (see `Kernel::run`).
    pub(super) unsafe fn avx512_tile(t: Tile, rows: usize) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe {
            match t.next {
                Some(_) => by_rows!(avx512, t, rows, [1 2 3 4 5 6 7 8 9 10 11 12], true),
                None => by_rows!(avx512, t, rows, [1 2 3 4 5 6 7 8 9 10 11 12], false),
            }
        }
    }

    /// # Safety
    ///
    /// The CPU must support `avx2` and `fma`, `rows` must be 1..=6, and `t` must describe
    /// valid memory for `rows` rows (see `Kernel::run`).
    pub(super) unsafe fn avx2_tile(t: Tile, rows: usize) {
        for half in [0, 16] {
            // SAFETY: a panel row has PANEL = 32 values; the bias is only read below `cols`.
            let t = unsafe {
                Tile {
                    b: t.b.add(half),
                    c: t.c.add(half),
                    cols: t.cols.saturating_sub(half),
                    bias: t.bias.map(|b| b.add(half)),
                    ..t
                }
            };
            if t.cols > 0 {
                // SAFETY: the caller's guarantees, for the half panel.
                unsafe { by_rows!(avx2, t, rows, [1 2 3 4 5 6]) }
            }
        }
    }

    /// R rows x 32 columns: 2R accumulators of 16 lanes. With `PREFETCH`, the panel
    /// `t.next` is fetched into the cache meanwhile, one panel row (two lines) per step.
    ///
    /// # Safety
    ///
    /// As `avx512_tile`, with R rows; with `PREFETCH`, `t.next` must be set.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const PREFETCH: bool>(t: Tile) {
        // SAFETY: the caller guarantees the CPU features and that every pointer read or
        // written below (R input rows, the panel, the bias below `cols`, R output rows) is
        // valid; the panel loads are aligned (64-byte lines, offsets of 16 or 8 values).
        // A prefetch reads nothing architecturally; its addresses lie in the next panel.
        unsafe {
            let next = t.next.unwrap_or(t.b);
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for kk in 0..t.k {
                if PREFETCH {
                    _mm_prefetch::<_MM_HINT_T0>(next.add(kk * PANEL).cast());
                    _mm_prefetch::<_MM_HINT_T0>(next.add(kk * PANEL + 16).cast());
                }
                let b0 = _mm512_load_ps(t.b.add(kk * PANEL));
                let b1 = _mm512_load_ps(t.b.add(kk * PANEL + 16));
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*t.a.add(r * t.lda + kk));
                    row[0] = _mm512_fmadd_ps(a, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(a, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &reg) in row.iter().enumerate() {
                    let from = v * 16;
                    if t.cols >= from + 16 {
                        let sum = match t.bias {
                            Some(b) => _mm512_add_ps(reg, _mm512_loadu_ps(b.add(from))),
                            None => reg,
                        };
                        _mm512_storeu_ps(t.c.add(r * t.ldc + from), sum);
                    } else {
                        let mut lanes = [0f32; 16];
                        _mm512_storeu_ps(lanes.as_mut_ptr(), reg);
                        t.store_partial(r, from, &lanes);
                    }
                }
            }
        }
    }

    /// R rows x 16 columns (half a panel): 2R accumulators of 8 lanes.
    ///
    /// # Safety
    ///
    /// As `avx2_tile`, with R rows.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize>(t: Tile) {
        // SAFETY: the caller guarantees the CPU features and that every pointer read or
        // written below (R input rows, the panel, the bias below `cols`, R output rows) is
        // valid; the panel loads are aligned (64-byte lines, offsets of 16 or 8 values).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for kk in 0..t.k {
                let b0 = _mm256_load_ps(t.b.add(kk * PANEL));
                let b1 = _mm256_load_ps(t.b.add(kk * PANEL + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm256_set1_ps(*t.a.add(r * t.lda + kk));
                    row[0] = _mm256_fmadd_ps(a, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(a, b1, row[1]);
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (v, &reg) in row.iter().enumerate() {
                    let from = v * 8;
                    if t.cols >= from + 8 {
                        let sum = match t.bias {
                            Some(b) => _mm256_add_ps(reg, _mm256_loadu_ps(b.add(from))),
                            None => reg,
                        };
                        _mm256_storeu_ps(t.c.add(r * t.ldc + from), sum);
                    } else {
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), reg);
                        t.store_partial(r, from, &lanes);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Deterministic values in [-0.5, 0.5) (an LCG), for the kernels' tests here and in qgemm.
    pub(in crate::models) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The same chain the kernels compute: one fused multiply-add per input, in order.
    fn reference(
        x: &[f32],
        w: &[f32],
        m: usize,
        n: usize,
        k: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for kk in 0..k {
                    acc = x[i * k + kk].mul_add(w[j * k + kk], acc);
                }
                out[i * n + j] = acc + bias.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    /// Every kernel of this CPU; never empty, since the portable kernel runs everywhere.
    fn kernels() -> Vec<Kernel> {
        let kernels = Kernel::available();
        assert_eq!(kernels.last().map(|k| k.name()), Some("Portable"));
        kernels
    }

    #[test]
    fn detection_never_offers_the_portable_kernel_for_models() {
        assert!(Kernel::detect().is_none_or(|k| k.name() != "Portable"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            Kernel::detect().is_some(),
            std::arch::is_x86_feature_detected!("avx512f")
                || (std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma"))
        );
    }

    #[test]
    fn every_kernel_matches_the_fused_chain_bit_for_bit() {
        for kernel in kernels() {
            for (m, n, k) in [
                (1, 1, 1),
                (13, 33, 7),
                (25, 70, 19),
                (100, 65, 40),
                (3, 31, 64),
                // A T5 beam search's 15 and 20 hypotheses: tiles of 8 + 7 and 10 + 10 (6 + 5 +
                // 4 and 7 x 2 + 6 for AVX2), the last one prefetching the next panel.
                (15, 97, 50),
                (20, 96, 33),
            ] {
                let x = values(m * k, 1);
                let w = values(n * k, 2);
                let b = values(n, 3);
                let packed = PackedMatrix::pack(&w, n, k, kernel);
                for bias in [None, Some(b.as_slice())] {
                    let got = packed.matmul_t(&x, m, bias);
                    assert_eq!(
                        got,
                        reference(&x, &w, m, n, k, bias),
                        "{kernel:?} {m}x{n}x{k}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_of_the_product_are_the_whole_product() {
        for kernel in kernels() {
            let (m, n, k) = (27, 161, 40);
            let x = values(m * k, 7);
            let b = values(n, 8);
            let packed = PackedMatrix::pack(&values(n * k, 9), n, k, kernel);
            for block in [32, 64, 160, 192] {
                let whole = packed.matmul_t(&x, m, Some(&b));
                let seen = std::sync::Mutex::new(vec![f32::NAN; m * n]);
                let calls = std::sync::atomic::AtomicUsize::new(0);
                packed.matmul_t_blocks(&x, m, Some(&b), block, |first, values| {
                    calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let width = values.len() / m;
                    assert_eq!(width, (n - first).min(block), "block at {first}");
                    let mut seen = seen.lock().unwrap();
                    for (r, row) in values.chunks(width).enumerate() {
                        seen[r * n + first..][..width].copy_from_slice(row);
                    }
                });
                assert_eq!(calls.into_inner(), n.div_ceil(block));
                let seen = seen.into_inner().unwrap();
                assert!(
                    (seen.iter().zip(&whole)).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kernel:?} blocks of {block}"
                );
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_outputs_alone_and_in_a_batch() {
        for kernel in kernels() {
            let (m, n, k) = (64, 97, 48);
            let x = values(m * k, 4);
            let packed = PackedMatrix::pack(&values(n * k, 5), n, k, kernel);
            let batch = packed.matmul_t(&x, m, None);
            for i in [0, 11, 12, 63] {
                let alone = packed.matmul_t(&x[i * k..(i + 1) * k], 1, None);
                assert_eq!(alone, batch[i * n..(i + 1) * n], "{kernel:?} row {i}");
            }
        }
    }

    #[test]
    fn rows_read_back_from_the_packed_order() {
        for kernel in kernels() {
            let (n, k) = (70, 9);
            let w = values(n * k, 6);
            let packed = PackedMatrix::pack(&w, n, k, kernel);
            let mut row = vec![0f32; k];
            for i in [0, 31, 32, 69] {
                packed.copy_row(i, &mut row);
                assert_eq!(row, w[i * k..(i + 1) * k]);
            }
        }
    }
}
