//! Times mtsum's packed f32 kernels against candle's matmul on the linear layers of an
//! opus-mt-sized Marian (d_model 512, ffn 2048, vocab 62,518), in the same run:
//!
//!     cargo run --release --example gemm_bench -- [THREADS]
//!
//! For each shape it prints milliseconds per product and GFLOP/s for both, and their ratio.
//! Then one beam-search decoder step's products (6 layers of the fused q/k/v, the self- and
//! cross-attention outputs, the cross-attention query and the two feed-forward products, at 64
//! rows: a 4-beam batch of 16 sentences), in milliseconds and GFLOP/s: once as rayon loops from
//! a worker (each product hands its tasks to the sleeping second thread), once in a
//! `mtsum::parallel::Team` as the decoder runs them. Running it with 1 and 2 threads, and twice
//! with 1 thread side by side, tells whether two threads are held back by each other or by what
//! the two cores share:
//!
//!     cargo run --release --example gemm_bench -- 1
//!     (target/release/examples/gemm_bench 1 & target/release/examples/gemm_bench 1; wait)

use std::time::Instant;

use candle_core::{Device, Module, Tensor};
use mtsum::models::gemm::{Kernel, PackedMatrix};

/// Best of a few timed runs, in seconds.
fn best_of(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> candle_core::Result<()> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    mtsum::models::set_threads(threads).map_err(candle_core::Error::msg)?;
    let Some(kernel) = Kernel::detect() else {
        println!("no AVX2/AVX-512 on this CPU: mtsum uses candle's matmul here");
        return Ok(());
    };
    println!("kernel {kernel:?}, {threads} threads");
    println!("| rows | out x in | mtsum ms | GFLOP/s | candle ms | GFLOP/s | ratio |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let dev = Device::Cpu;
    for (outputs, inputs) in [(62518, 512), (1536, 512), (2048, 512), (512, 2048)] {
        let weight = Tensor::randn(0f32, 1.0, (outputs, inputs), &dev)?;
        let packed = PackedMatrix::pack(&weight.flatten_all()?.to_vec1()?, outputs, inputs, kernel);
        let plain = candle_nn::Linear::new(weight, None);
        for rows in [16, 64, 256] {
            let x = Tensor::randn(0f32, 1.0, (rows, inputs), &dev)?;
            let values = x.flatten_all()?.to_vec1::<f32>()?;
            let ours = best_of(|| drop(packed.matmul_t(&values, rows, None)));
            let theirs = best_of(|| drop(plain.forward(&x).expect("candle matmul")));
            let gflop = 2.0 * (rows * outputs * inputs) as f64 / 1e9;
            println!(
                "| {rows} | {outputs} x {inputs} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2}x |",
                ours * 1e3,
                gflop / ours,
                theirs * 1e3,
                gflop / theirs,
                theirs / ours
            );
        }
    }
    decoder_step(kernel, threads);
    Ok(())
}

/// A decoder step's products at 64 rows, timed over 200 steps on a rayon worker.
fn decoder_step(kernel: Kernel, threads: usize) {
    const ROWS: usize = 64;
    let shapes = [
        (1536, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (2048, 512),
        (512, 2048),
    ];
    let matrix = |(outputs, inputs): (usize, usize)| {
        let w: Vec<f32> = (0..outputs * inputs)
            .map(|i| (i * 7919 % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        PackedMatrix::pack(&w, outputs, inputs, kernel)
    };
    let layers: Vec<Vec<PackedMatrix>> = (0..6)
        .map(|_| shapes.iter().map(|&shape| matrix(shape)).collect())
        .collect();
    let input = |width: usize| -> Vec<f32> {
        (0..ROWS * width)
            .map(|i| (i * 31 % 997) as f32 / 997.0 - 0.5)
            .collect()
    };
    let (narrow, wide) = (input(512), input(2048));
    let step = || {
        for layer in &layers {
            for (m, &(_, inputs)) in layer.iter().zip(&shapes) {
                let x = if inputs == 512 { &narrow } else { &wide };
                std::hint::black_box(m.matmul_t(x, ROWS, None));
            }
        }
    };
    let timed = || {
        step();
        let started = Instant::now();
        (0..200).for_each(|_| step());
        started.elapsed().as_secs_f64() / 200.0
    };
    let flops: f64 =
        2.0 * ROWS as f64 * 6.0 * shapes.iter().map(|&(o, i)| (o * i) as f64).sum::<f64>();
    let report = |how: &str, seconds: f64| {
        println!(
            "one decoder step's products ({ROWS} rows, 6 layers), {threads} threads, {how}: {:.2} ms, {:.0} GFLOP/s",
            seconds * 1e3,
            flops / seconds / 1e9
        )
    };
    println!();
    // From a worker, each product a rayon loop split by stealing (the decoder before its team).
    report("rayon", rayon::join(timed, || {}).0);
    // In a team of two threads, as `generate::search` runs the decoder now.
    report("team", mtsum::parallel::Team::run(timed));
}
